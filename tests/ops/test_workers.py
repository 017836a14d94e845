"""``manage.py serve --workers N``: one listening socket, N daphne worker processes.

The end-to-end test runs only with ``REDIS_URL`` and PostgreSQL (the configuration several
processes need); run it on a database of its own, e.g.
``DATABASE_URL=postgres://postgres@127.0.0.1:5432/workers REDIS_URL=redis://127.0.0.1:6379/9``.
The refusal of SQLite runs on the default SQLite suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.realtime.servers import (
    ServerProcess,
    needs_shared_postgres_and_redis,
    server_env,
    shared_database_url,
    ws_open,
    ws_receive,
    ws_request,
)

SERVE = [
    sys.executable,
    "manage.py",
    "serve",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--workers",
    "2",
]

multiprocess = needs_shared_postgres_and_redis()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the refusal of SQLite")
def test_workers_refuse_sqlite():
    with pytest.raises(CommandError, match="PostgreSQL"):
        call_command("serve", "--workers", "2", "--port", "0")


def test_workers_must_be_positive():
    with pytest.raises(CommandError, match="at least 1"):
        call_command("serve", "--workers", "0", "--port", "0")


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _metrics(server: ServerProcess) -> dict[str, float]:
    """One scrape over a fresh connection (it may land on either worker)."""
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=5) as response:  # noqa: S310
        values = {}
        for line in response.read().decode().splitlines():
            if line.startswith(("trading_process_id ", "trading_leader ")):
                name, value = line.split()
                values[name] = float(value)
        return values


def _scrape_each_worker(server: ServerProcess, expected: set[int], timeout: float = 20) -> dict:
    """``{pid: trading_leader}`` once every expected worker has answered a scrape."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(seen) != expected:
        values = _metrics(server)
        seen[int(values["trading_process_id"])] = values["trading_leader"]
    return seen


def _order(server: ServerProcess, agent_id: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the test
        f"{server.http}/api/v1/agents/{agent_id}/trades",
        data=json.dumps({"symbol": "AAPL", "side": "buy", "quantity": "1"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def workers_server(reference_services):
    env = server_env(
        reference_services,
        database_url=shared_database_url(),
        redis_url=settings.REDIS_URL,
        LEADER_RENEW_SECONDS="0.5",
    )
    server = ServerProcess(SERVE, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.mark.e2e
@pytest.mark.redis
@multiprocess
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
async def test_two_workers_share_the_port_lead_once_fan_out_and_stop_cleanly(
    workers_server, owner, agent_factory
):
    server = workers_server
    parent = server.process.pid

    # two worker processes, both answering on the one port
    deadline = time.monotonic() + 20
    while len(_children(parent)) != 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    workers = _children(parent)
    assert len(workers) == 2, (workers, server.output())
    with urllib.request.urlopen(f"{server.http}/health/ready", timeout=10) as response:  # noqa: S310
        assert response.status == 200

    # requests land on both, and exactly one of them leads the background jobs
    deadline = time.monotonic() + 15
    while True:
        leaders = await asyncio.to_thread(_scrape_each_worker, server, workers)
        assert set(leaders) == workers, (leaders, workers, server.output())
        if sorted(leaders.values()) == [0.0, 1.0] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert sorted(leaders.values()) == [0.0, 1.0], leaders

    # a WebSocket client on the shared port receives the fills of orders served by any worker
    agent = await database_sync_to_async(agent_factory)(budget="100000")
    token = (await database_sync_to_async(Token.objects.get_or_create)(user=owner))[0].key
    agent_id = str(agent.id)
    async with await ws_open(server, token) as client:
        subscribe = {"action": "subscribe", "channel": "trades", "agent_id": agent_id}
        assert (await ws_request(client, subscribe))["type"] == "subscribed"
        accepted = set()
        for _ in range(6):  # fresh connections: both workers serve some of them
            status, trade = await asyncio.to_thread(_order, server, agent_id, token)
            assert status == 201, (trade, server.output())
            accepted.add(trade["id"])
        filled = set()
        while filled != accepted:
            event = await ws_receive(client)
            if event.get("event") == "trade.filled":
                filled.add(event["data"]["id"])
        assert filled == accepted

    # a worker that dies is replaced
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = _children(parent)
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.2)
    replaced = _children(parent)
    assert len(replaced) == 2 and victim not in replaced, (replaced, server.output())

    # SIGTERM to the supervisor alone: it stops every worker and exits 0
    os.kill(parent, signal.SIGTERM)
    assert await asyncio.to_thread(server.process.wait, 20) == 0, server.output()
    assert not [pid for pid in replaced if Path(f"/proc/{pid}").exists()], server.output()
