"""The dashboard in a real browser against a real server process.

``manage.py serve`` runs in a subprocess on a free port with its own SQLite file (migrated
and seeded with ``seed_demo`` first) and the session's reference gRPC services, so the
server, the page script, the WebSocket and the REST API are all the real thing. Headless
Debian Chromium is driven by Playwright.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.realtime.servers import server_env

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 20_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _manage(*args: str, env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def _http(method: str, url: str, *, token: str | None = None, body: dict | None = None):
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, method=method)  # noqa: S310 (checked above)
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, data=data, timeout=10) as response:  # noqa: S310
        return response.status, json.loads(response.read() or b"null")


@pytest.fixture
def live_server_process(reference_services, tmp_path):
    """A seeded server on a free port; yields (base_url, {username: token})."""
    port = _free_port()
    env = server_env(
        reference_services,
        database_url=f"sqlite:///{tmp_path / 'dashboard.db'}",
        MARKET_TICK_MS="500",
    )
    _manage("migrate", "--noinput", env=env)
    seeded = _manage("seed_demo", env=env)
    tokens = dict(re.findall(r"^\s*(\w+) / \S+\s+token (\w+)", seeded, flags=re.MULTILINE))
    assert set(tokens) == {"operator", "alice", "bob"}, seeded

    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _http("GET", f"{base}/health/live")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("the server did not start:\n" + (tmp_path / "serve.log").read_text())
            time.sleep(0.2)
        yield base, tokens
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Chromium not installed: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def test_operator_approves_live_and_sees_new_trades_without_reloading(live_server_process, browser):
    base, tokens = live_server_process
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )

    # given: the demo operator signs in and the page is live
    page.goto(f"{base}/dashboard/")
    assert "/dashboard/login/" in page.url
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("operator-demo-pass")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("html[data-dashboard-ready='true']")
    page.wait_for_selector("#connection-state[data-state='open']")
    navigations_after_login = len(navigations)

    # the seeded order waiting for approval is in the queue
    approval_rows = page.locator("#approvals-body tr")
    assert approval_rows.count() == 1
    row = approval_rows.first
    assert "Alice Momentum" in row.inner_text()
    trade_id = row.get_attribute("data-trade-id")
    trade_row = page.locator(f"#trades-body tr[data-trade-id='{trade_id}']")
    assert trade_row.get_attribute("data-status") == "pending_approval"
    agent_row = page.locator("#agents-body tr", has_text="Alice Momentum")
    cash_before = agent_row.locator("[data-field='cash']").inner_text()
    positions_before = agent_row.locator("[data-field='positions']").inner_text()

    # when: the operator approves it
    row.get_by_role("button", name=re.compile(r"^Approve ")).click()

    # then: the trade turns filled and the agent's cash and portfolio value change, live
    page.wait_for_selector(f"#trades-body tr[data-trade-id='{trade_id}'][data-status='filled']")
    page.wait_for_function(
        """([cash, positions]) => {
            const row = [...document.querySelectorAll('#agents-body tr')]
                .find((r) => r.textContent.includes('Alice Momentum'));
            return row.querySelector('[data-field="cash"]').textContent !== cash
                && row.querySelector('[data-field="positions"]').textContent !== positions;
        }""",
        arg=[cash_before, positions_before],
    )
    assert page.locator("#approvals-body tr").count() == 0

    # when: alice's program places an order over the REST API
    agent_id = page.locator("#agents-body tr", has_text="Alice Mean Reversion").get_attribute(
        "data-agent-id"
    )
    status, created = _http(
        "POST",
        f"{base}/api/v1/agents/{agent_id}/trades",
        token=tokens["alice"],
        body={"symbol": "AAPL", "side": "buy", "type": "market", "quantity": "2"},
    )
    assert status == 201, created

    # then: it appears in the trades table without a reload
    new_row = page.locator(f"#trades-body tr[data-trade-id='{created['id']}']")
    new_row.wait_for()
    assert "buy 2 AAPL" in new_row.inner_text()
    page.wait_for_selector(
        f"#trades-body tr[data-trade-id='{created['id']}'][data-status='filled']"
    )

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert len(navigations) == navigations_after_login, navigations
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert problems == []
