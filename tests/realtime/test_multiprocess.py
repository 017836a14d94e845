"""Two daphne processes sharing the Redis channel layer and the PostgreSQL database: a client
connected to one receives the events caused by a request to the other.

Runs only with ``REDIS_URL`` set and PostgreSQL (the test database must be visible to other
processes, and the in-memory layer is per process).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from tests.realtime.helpers import publish
from tests.realtime.servers import (
    DAPHNE,
    RECEIVE_TIMEOUT_SECONDS,
    ServerProcess,
    server_env,
    shared_database_url,
    ws_open,
    ws_receive,
    ws_request,
)

DAPHNE_COMMAND = [str(DAPHNE), "-b", "127.0.0.1", "-p", "{port}", "config.asgi:application"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.timeout(120),
]


@pytest.fixture
def daphne_pair(reference_services):
    """Two server processes on the test's database, Redis and reference gRPC services."""
    env = server_env(
        reference_services, database_url=shared_database_url(), redis_url=settings.REDIS_URL
    )
    processes: list[ServerProcess] = []
    try:
        processes = [ServerProcess(DAPHNE_COMMAND, env), ServerProcess(DAPHNE_COMMAND, env)]
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:
            process.stop()


def _post_json(url: str, body: dict, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL built by the test
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=RECEIVE_TIMEOUT_SECONDS) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def market_agent(agent_factory):
    from trades import market

    market.set_price("AAPL", "100.00")
    return agent_factory(budget="100000")


async def test_event_published_by_another_process_reaches_the_client(
    daphne_pair, owner, token_for, market_agent
):
    # given a client of the first server watching the agent's trades
    server, _ = daphne_pair
    token = await database_sync_to_async(token_for)(owner)
    async with await ws_open(server, token) as client:
        answer = await ws_request(
            client, {"action": "subscribe", "channel": "trades", "agent_id": str(market_agent.id)}
        )
        assert answer["type"] == "subscribed"
        # when this (third) process publishes into the Redis layer
        seq = await publish(market_agent.id, data={"from": "test process"})
        # then
        event = await ws_receive(client)
        assert (event["event"], event["seq"], event["data"]) == (
            "trade.created",
            seq,
            {"from": "test process"},
        )


async def test_order_posted_to_one_server_streams_to_clients_of_both(
    daphne_pair, owner, token_for, market_agent
):
    # given a client on each server watching the agent's trades and portfolio
    first, second = daphne_pair
    token = await database_sync_to_async(token_for)(owner)
    agent_id = str(market_agent.id)
    async with await ws_open(first, token) as on_first, await ws_open(second, token) as on_second:
        for client in (on_first, on_second):
            for channel in ("trades", "portfolio"):
                answer = await ws_request(
                    client, {"action": "subscribe", "channel": channel, "agent_id": agent_id}
                )
                assert answer["type"] == "subscribed"
        # when an order is posted to the second server
        status, trade = await asyncio.to_thread(
            _post_json,
            f"{second.http}/api/v1/agents/{agent_id}/trades",
            {"symbol": "AAPL", "side": "buy", "quantity": "2"},
            token,
        )
        assert status == 201, (trade, second.output())
        # then both clients see it fill, in order
        for client in (on_first, on_second):
            events = [await ws_receive(client) for _ in range(3)]
            assert [e["event"] for e in events] == [
                "trade.created",
                "trade.filled",
                "portfolio.update",
            ]
            assert events[0]["data"]["id"] == trade["id"]
            seqs = [e["seq"] for e in events]
            assert seqs == sorted(seqs) and len(set(seqs)) == 3
