"""``make run``'s demo in a real browser: the seeded agents trade by themselves.

The server starts as ``make run`` starts it (``serve --seed-demo-if-empty`` on a fresh SQLite
database, the request limit on), here with the session's reference gRPC services. Nobody types
a request: the operator opens the dashboard and watches orders from the demo agents' runner
arrive and P&L move. A screenshot goes to ``test-artifacts/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.realtime.servers import BASE_DIR, PYTHON, ServerProcess, manage, server_env

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(240)]

ARTIFACTS = BASE_DIR / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The runner's first orders come at once; the rules that need a price history act once it
# fills (21 ticks at 2 a second here, 21 s with make run's 1 a second).
WAIT_MS = 60_000


@pytest.fixture
def demo_server(tmp_path, reference_services):
    env = server_env(
        reference_services,
        database_url=f"sqlite:///{tmp_path / 'demo.db'}",
        MARKET_TICK_MS="500",
        RATE_LIMIT_ENABLED="true",
        LOG_LEVEL="INFO",
    )
    manage("migrate", "--noinput", env=env)
    server = ServerProcess(
        [
            str(PYTHON),
            "manage.py",
            "serve",
            "--seed-demo-if-empty",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        env,
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


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


def test_the_seeded_agents_trade_on_the_dashboard_without_anyone_typing_a_request(
    demo_server, browser
):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))

    # given: the operator signs in to the dashboard of a server just started by `make run`
    page.goto(f"{demo_server.http}/dashboard/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("operator-demo-pass")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("html[data-dashboard-ready='true']")
    page.wait_for_selector("#connection-state[data-state='open']")
    seeded = page.eval_on_selector_all(
        "#trades-body tr", "rows => rows.map(r => r.dataset.tradeId)"
    )
    pnl_before = page.eval_on_selector_all(
        "#agents-body [data-field='pnl']", "cells => cells.map(c => c.textContent)"
    )

    # when: nobody does anything
    # then: orders of at least three agents with different strategies appear, live
    page.wait_for_function(
        """(seeded) => {
            const strategies = new Set();
            for (const row of document.querySelectorAll('#trades-body tr')) {
                if (seeded.includes(row.dataset.tradeId)) continue;
                const agent = document.querySelector(
                    `#agents-body tr[data-agent-id="${row.dataset.agentId}"]`);
                if (agent) strategies.add(agent.children[2].textContent);
            }
            return strategies.size >= 3;
        }""",
        arg=seeded,
    )
    # and the agents' P&L moves
    page.wait_for_function(
        """(before) => {
            const now = [...document.querySelectorAll("#agents-body [data-field='pnl']")]
                .map(c => c.textContent);
            return now.some((text, i) => text !== before[i]);
        }""",
        arg=pnl_before,
    )
    new_rows = page.eval_on_selector_all(
        "#trades-body tr", "rows => rows.map(r => r.dataset.tradeId)"
    )
    assert len(set(new_rows) - set(seeded)) >= 3

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-demo-agents.png"), full_page=True)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert problems == []
    demo_server.log.flush()
    output = Path(demo_server.log.name).read_text(errors="replace")  # all of it
    assert "Demo agents:" in output
    assert "decided:" in output
    assert "Traceback" not in output


def test_demo_agents_false_leaves_the_seeded_agents_idle(tmp_path, reference_services):
    # given: `make run`'s start with DEMO_AGENTS=false
    env = server_env(
        reference_services,
        database_url=f"sqlite:///{tmp_path / 'idle.db'}",
        DEMO_AGENTS="false",
        LOG_LEVEL="INFO",
    )
    manage("migrate", "--noinput", env=env)
    server = ServerProcess(
        [str(PYTHON), "manage.py", "serve", "--seed-demo-if-empty", "--port", "{port}"], env
    )
    try:
        server.wait_ready()
        time.sleep(3)
        output = server.output()
    finally:
        server.stop()

    # then: the banner says so, and no runner started
    assert "Demo agents:     idle (DEMO_AGENTS=false)" in output, output
    # the demo logins are printed once, in the banner
    assert output.count("alice / alice-demo-pass") == 1, output
    assert "run_agents:" not in output
