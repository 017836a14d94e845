"""The production processes, end to end, on the machine's PostgreSQL and Redis: gunicorn
serving HTTP (``config.wsgi``), uvicorn serving WebSockets (``config.asgi``) and two replicas of
``manage.py run_jobs``, each a real process on its own port.

An order placed over HTTP on gunicorn reaches a WebSocket client of uvicorn (events cross
processes through the Redis layer); the market, ticked by the jobs, streams once per interval
although two replicas run (one leads); the outbox is delivered exactly once; when the leader
stops, the other replica takes over; every process exits 0 on SIGTERM. Runs only with
``REDIS_URL`` and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from runtime.websocket_server import uvicorn_command
from tests.realtime.servers import (
    PYTHON,
    UVICORN,
    ServerProcess,
    gunicorn_command,
    server_env,
    shared_database_url,
    ws_open,
    ws_receive,
    ws_request,
)

TICK_MS = 250
WEB = gunicorn_command("--workers", "2")
WS = uvicorn_command([str(UVICORN)], host="127.0.0.1", port="{port}")  # compose's default
JOBS = [str(PYTHON), "manage.py", "run_jobs"]
JOBS_READY = "Background jobs running"
LEADS = "this process is now the leader"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.timeout(180),
]


@pytest.fixture
def production(reference_services):
    """``(web, ws, [jobs, jobs])`` on the test's database, Redis and reference services."""
    env = server_env(
        reference_services,
        database_url=shared_database_url(),
        redis_url=settings.REDIS_URL,
        MARKET_TICK_MS=str(TICK_MS),
        OUTBOX_DELIVERY_INTERVAL_MS="200",
        LEADER_RENEW_SECONDS="0.5",
        LEADER_LEASE_SECONDS="3",
        LOG_LEVEL="INFO",
    )
    processes: list[ServerProcess] = []
    try:
        web, ws = ServerProcess(WEB, env), ServerProcess(WS, env)
        jobs = [ServerProcess(JOBS, env), ServerProcess(JOBS, env)]
        processes = [web, ws, *jobs]
        web.wait_ready()
        ws.wait_ready()
        for replica in jobs:
            replica.wait_output(JOBS_READY)
        yield web, ws, jobs
    finally:
        for process in processes:
            process.stop()


def _request(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the test
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _leaders(jobs: list[ServerProcess]) -> list[ServerProcess]:
    return [replica for replica in jobs if LEADS in replica.output(tail=None)]


async def _wait_for_one_leader(jobs: list[ServerProcess], timeout: float = 15) -> ServerProcess:
    deadline = time.monotonic() + timeout
    while not _leaders(jobs) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    leaders = _leaders(jobs)
    assert len(leaders) == 1, [replica.output() for replica in jobs]
    return leaders[0]


async def _ticks(client, count: int) -> list[tuple[float, int]]:
    """``(arrival time, seq)`` of the next ``count`` AAPL ticks, once what arrived while
    nobody read (held in the client's buffer, arriving at once) is dropped."""
    while True:
        try:
            await asyncio.wait_for(client.recv(), 0.05)
        except TimeoutError:
            break
    ticks = []
    while len(ticks) < count:
        event = await ws_receive(client)
        if event.get("event") == "market.price":
            ticks.append((time.monotonic(), event["seq"]))
    return ticks


def _once_per_interval(ticks: list[tuple[float, int]]) -> None:
    seqs = [seq for _, seq in ticks]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    window = ticks[-1][0] - ticks[0][0]
    # one tick per interval (a second ticker would about double the count)
    assert len(ticks) - 1 <= window / (TICK_MS / 1000) * 1.3 + 1, (len(ticks), window)


async def test_orders_on_gunicorn_stream_to_uvicorn_clients_and_two_job_replicas_lead_once(
    production, owner, agent_factory, token_for
):
    web, ws, jobs = production
    agent = await database_sync_to_async(agent_factory)(budget="100000")
    token = await database_sync_to_async(token_for)(owner)
    agent_id = str(agent.id)

    # exactly one of the two job replicas leads
    leader = await _wait_for_one_leader(jobs)
    await asyncio.sleep(1.5)  # three heartbeats of the follower: still refused
    assert _leaders(jobs) == [leader]

    async with await ws_open(ws, token) as client:
        for message in (
            {"action": "subscribe", "channel": "trades", "agent_id": agent_id},
            {"action": "subscribe", "channel": "market", "symbol": "AAPL"},
        ):
            assert (await ws_request(client, message))["type"] == "subscribed"

        # when: orders over HTTP to gunicorn (two worker processes)
        accepted = []
        for _ in range(4):
            status, trade = await asyncio.to_thread(
                _request,
                f"{web.http}/api/v1/agents/{agent_id}/trades",
                token,
                {"symbol": "AAPL", "side": "buy", "quantity": "1"},
            )
            assert status == 201, (trade, web.output())
            accepted.append(trade["id"])

        # then: uvicorn's client sees each one created and filled, and AAPL ticks once per
        # interval although two replicas run the jobs
        created, filled, ticks = set(), set(), []
        started = time.monotonic()
        while time.monotonic() - started < 4 * TICK_MS / 1000 + 3 or len(filled) < 4:
            event = await ws_receive(client)
            if event.get("event") == "trade.created":
                created.add(event["data"]["id"])
            elif event.get("event") == "trade.filled":
                filled.add(event["data"]["id"])
            elif event.get("event") == "market.price":
                ticks.append((time.monotonic(), event["seq"]))
        assert created == filled == set(accepted)
        _once_per_interval(ticks)

        # when the leader stops, the other replica takes over: the market goes on ticking
        assert await asyncio.to_thread(leader.terminate) == 0, leader.output()
        (follower,) = [replica for replica in jobs if replica is not leader]
        await _wait_for_one_leader([follower])
        _once_per_interval(await _ticks(client, 6))

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
    assert [code for code, _, _ in rows].count("trade_executions") == 4


async def test_every_production_process_exits_0_on_sigterm(production):
    web, ws, jobs = production
    for process in (web, ws, *jobs):
        assert await asyncio.to_thread(process.terminate) == 0, process.output()
