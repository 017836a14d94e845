"""Scale-out, end to end: two `serve` processes on the machine's PostgreSQL and Redis.

Both run the background jobs, so leader election is what keeps the market ticking once per
interval and the outbox delivered once. Runs only with ``REDIS_URL`` and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
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

TICK_MS = 250
SERVE = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", "{port}"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    needs_shared_postgres_and_redis(),
    pytest.mark.timeout(180),
]


@pytest.fixture
def serve_pair(reference_services):
    env = server_env(
        reference_services,
        database_url=shared_database_url(),
        redis_url=settings.REDIS_URL,
        MARKET_TICK_MS=str(TICK_MS),
        OUTBOX_DELIVERY_INTERVAL_MS="200",
        LEADER_RENEW_SECONDS="0.5",
    )
    processes: list[ServerProcess] = []
    try:
        processes = [ServerProcess(SERVE, env), ServerProcess(SERVE, env)]
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:
            process.stop()


def _request(url: str, token: str, body: dict | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the test
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw = response.read().decode()
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(raw) if "json" in kind else raw
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _leader_flag(server: ServerProcess) -> float:
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=5) as response:  # noqa: S310
        for line in response.read().decode().splitlines():
            if line.startswith("trading_leader "):
                return float(line.split()[1])
    raise AssertionError("trading_leader missing from /metrics")


async def test_two_processes_share_streams_tick_once_and_deliver_once(
    serve_pair, owner, agent_factory
):
    first, second = serve_pair
    agent = await database_sync_to_async(agent_factory)(budget="100000")
    token = (await database_sync_to_async(Token.objects.get_or_create)(user=owner))[0].key
    agent_id = str(agent.id)

    # exactly one of the two processes leads the singleton jobs
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        flags = [await asyncio.to_thread(_leader_flag, s) for s in serve_pair]
        if sorted(flags) == [0.0, 1.0]:
            break
        await asyncio.sleep(0.25)
    assert sorted(flags) == [0.0, 1.0], flags

    async with await ws_open(first, token) as client:
        for message in (
            {"action": "subscribe", "channel": "trades", "agent_id": agent_id},
            {"action": "subscribe", "channel": "market", "symbol": "AAPL"},
        ):
            assert (await ws_request(client, message))["type"] == "subscribed"

        # when: orders through both processes
        accepted = []
        for server in (second, first, second, first):
            status, trade = await asyncio.to_thread(
                _request,
                f"{server.http}/api/v1/agents/{agent_id}/trades",
                token,
                {"symbol": "AAPL", "side": "buy", "quantity": "1"},
            )
            assert status == 201, (trade, server.output())
            accepted.append(trade["id"])

        # then: the client on the first process sees every fill, including those of the second,
        # and AAPL ticks once per interval (consecutive seqs, no duplicate ticks)
        filled, ticks = set(), []
        started = time.monotonic()
        while time.monotonic() - started < 4 * TICK_MS / 1000 + 3 or len(filled) < 4:
            event = await ws_receive(client)
            if event.get("event") == "trade.filled":
                filled.add(event["data"]["id"])
            elif event.get("event") == "market.price":
                ticks.append((time.monotonic(), event["seq"]))
        assert filled == set(accepted)
        seqs = [seq for _, seq in ticks]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        window = ticks[-1][0] - ticks[0][0]
        # one tick per interval (a second ticker would about double the count)
        assert len(ticks) - 1 <= window / (TICK_MS / 1000) * 1.3 + 1, (len(ticks), window)

    # and the outbox is delivered exactly once: every row accepted, none a duplicate
    from metering.models import DeliveryState, UsageEvent

    def outbox_states():
        return list(
            UsageEvent.objects.filter(agent_id=agent_id).values_list(
                "code", "delivery_state", "ingest_status"
            )
        )

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = await database_sync_to_async(outbox_states)()
        if rows and all(state == DeliveryState.DELIVERED for _, state, _ in rows):
            break
        await asyncio.sleep(0.3)
    assert rows and all(state == DeliveryState.DELIVERED for _, state, _ in rows), rows
    assert {status for _, _, status in rows} == {"accepted"}, rows
    executions = [code for code, _, _ in rows if code == "trade_executions"]
    assert len(executions) == 4
