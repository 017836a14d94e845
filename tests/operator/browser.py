"""Browser tests' fixtures: a real server process and headless Chromium.

``manage.py serve`` runs in a subprocess on a free port with its own SQLite file (migrated
and seeded with ``seed_demo`` first) and the session's reference gRPC services, so the
server, the page script, the WebSocket and the REST API are all the real thing. Headless
Debian Chromium is driven by Playwright.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.realtime.servers import manage, server_env

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


def http(method: str, url: str, *, token: str | None = None, body: dict | None = None):
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
    port = free_port()
    env = server_env(
        reference_services,
        database_url=f"sqlite:///{tmp_path / 'dashboard.db'}",
        MARKET_TICK_MS="500",
    )
    manage("migrate", "--noinput", env=env)
    seeded = manage("seed_demo", env=env)
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
                if http("GET", f"{base}/health/live")[0] == 200:
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
