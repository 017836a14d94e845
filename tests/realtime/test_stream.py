"""End to end: orders placed over HTTP reach the WebSocket streams, in order, after commit."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from tests.helpers import agent_url, trades_url
from tests.realtime.helpers import receive_events, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


def _auth(token: str) -> dict:
    return {"Authorization": f"Token {token}"}


@pytest.fixture
def streaming_agent(agent_factory, aapl_at_100):
    return agent_factory(budget="100000")


async def test_a_filled_order_streams_created_filled_then_portfolio(
    ws, owner, token_for, streaming_agent
):
    # given the owner watching the agent's trades and portfolio
    agent = streaming_agent
    token = await database_sync_to_async(token_for)(owner)
    communicator = await ws(token)
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    await subscribe(communicator, channel="portfolio", agent_id=str(agent.id))
    # when the agent buys at market over HTTP
    response = await AsyncClient().post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "3"},
        content_type="application/json",
        headers=_auth(token),
    )
    # then
    assert response.status_code == 201, response.content
    trade = response.json()
    events = await receive_events(communicator, 3)
    assert [e["event"] for e in events] == ["trade.created", "trade.filled", "portfolio.update"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert events[0]["data"]["id"] == trade["id"]
    assert events[1]["data"]["status"] == "filled"
    assert events[1]["data"]["filled_quantity"] == trade["filled_quantity"]
    assert events[2]["data"]["positions"][0]["symbol"] == "AAPL"
    assert await communicator.receive_nothing(timeout=0.3)


async def test_a_refused_order_streams_nothing(ws, owner, token_for, streaming_agent):
    # given
    agent = streaming_agent
    token = await database_sync_to_async(token_for)(owner)
    communicator = await ws(token)
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    await subscribe(communicator, channel="portfolio", agent_id=str(agent.id))
    # when an order exceeds the cash (its transaction rolls back)
    response = await AsyncClient().post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "5000"},
        content_type="application/json",
        headers=_auth(token),
    )
    # then
    assert response.status_code == 402, response.content
    assert response.json()["type"].rstrip("/").endswith("/problems/insufficient-funds")
    assert await communicator.receive_nothing(timeout=0.5)


async def test_an_order_needing_approval_reaches_the_operator_feed_and_fills_after_approval(
    ws, owner, operator, token_for, streaming_agent
):
    # given the operator watching the oversight feed and the owner watching the agent's trades
    agent = streaming_agent
    owner_token = await database_sync_to_async(token_for)(owner)
    operator_token = await database_sync_to_async(token_for)(operator)
    feed = await ws(operator_token)
    await subscribe(feed, channel="oversight")
    trades = await ws(owner_token)
    await subscribe(trades, channel="trades", agent_id=str(agent.id))
    # when the agent places an order above the auto-approval limit (150 x 100 = 15,000)
    response = await AsyncClient().post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "150"},
        content_type="application/json",
        headers=_auth(owner_token),
    )
    # then it waits for approval and the feed shows the request
    assert response.status_code == 202, response.content
    trade = response.json()
    requested = await feed.receive_json_from(timeout=5)
    assert (requested["event"], requested["channel"], requested["agent_id"]) == (
        "approval.requested",
        "oversight",
        str(agent.id),
    )
    assert requested["data"]["id"] == trade["approval_request_id"]
    assert requested["data"]["status"] == "pending"
    created = await trades.receive_json_from(timeout=5)
    assert (created["event"], created["data"]["status"]) == ("trade.created", "pending_approval")
    # when the operator approves it
    response = await AsyncClient().post(
        f"/api/v1/oversight/requests/{trade['approval_request_id']}/approve",
        {"reason": "within the desk's limits"},
        content_type="application/json",
        headers=_auth(operator_token),
    )
    assert response.status_code == 200, response.content
    # then the feed shows the decision and the owner sees the fill, after the request
    completed = await feed.receive_json_from(timeout=5)
    assert (completed["event"], completed["data"]["status"]) == ("approval.completed", "approved")
    assert completed["seq"] > requested["seq"]
    filled = await trades.receive_json_from(timeout=5)
    assert (filled["event"], filled["data"]["id"]) == ("trade.filled", trade["id"])
    assert filled["seq"] > created["seq"]


async def test_terminating_an_agent_over_http_tells_its_trades_subscribers(
    ws, owner, token_for, streaming_agent
):
    # given the owner watching only the agent's trades
    agent = streaming_agent
    token = await database_sync_to_async(token_for)(owner)
    communicator = await ws(token)
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    # when the kill switch is pulled
    response = await AsyncClient().delete(agent_url(agent), headers=_auth(token))
    # then
    assert response.status_code == 204, response.content
    event = await communicator.receive_json_from(timeout=5)
    assert (event["event"], event["data"]["status"]) == ("agent.terminated", "terminated")
    assert await communicator.receive_nothing(timeout=0.3)


async def _portfolio_updates(communicator, count: int) -> list[dict]:
    """The next ``count`` portfolio.update payloads, skipping the other events."""
    found: list[dict] = []
    while len(found) < count:
        frame = await communicator.receive_json_from(timeout=5)
        if frame.get("event") == "portfolio.update":
            found.append(frame["data"])
    return found


async def _place_pending(owner_token: str, agent) -> dict:
    response = await AsyncClient().post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "150"},
        content_type="application/json",
        headers=_auth(owner_token),
    )
    assert response.status_code == 202, response.content
    return response.json()


@pytest.mark.parametrize("ending", ["rejected", "cancelled", "expired"])
async def test_a_reservation_and_its_release_each_send_portfolio_update(
    ws, owner, operator, token_for, streaming_agent, ending
):
    # given the owner watching the agent's portfolio
    agent = streaming_agent
    owner_token = await database_sync_to_async(token_for)(owner)
    operator_token = await database_sync_to_async(token_for)(operator)
    communicator = await ws(owner_token)
    await subscribe(communicator, channel="portfolio", agent_id=str(agent.id))

    # when an order waits for approval (150 x 100 = 15,000 reserved)
    trade = await _place_pending(owner_token, agent)

    # then the portfolio shows the reservation, as REST does
    [reserved] = await _portfolio_updates(communicator, 1)
    assert (reserved["reserved_cash"], reserved["available_cash"]) == ("15000.00", "85000.00")
    rest = await AsyncClient().get(agent_url(agent, "/portfolio"), headers=_auth(owner_token))
    assert rest.json()["available_cash"] == reserved["available_cash"]

    # when the order ends without a fill
    if ending == "rejected":
        response = await AsyncClient().post(
            f"/api/v1/oversight/requests/{trade['approval_request_id']}/reject",
            {"reason": "too concentrated"},
            content_type="application/json",
            headers=_auth(operator_token),
        )
        assert response.status_code == 200, response.content
    elif ending == "cancelled":
        response = await AsyncClient().delete(
            trades_url(agent, trade["id"]), headers=_auth(owner_token)
        )
        assert response.status_code == 200, response.content
    else:
        from datetime import timedelta

        from django.utils import timezone

        from trades.services import approvals_expire_due

        later = timezone.now() + timedelta(days=2)
        assert await database_sync_to_async(approvals_expire_due)(later) == 1

    # then the portfolio shows the cash available again
    [released] = await _portfolio_updates(communicator, 1)
    assert (released["reserved_cash"], released["available_cash"]) == ("0.00", "100000.00")
    assert await communicator.receive_nothing(timeout=0.3)


async def test_a_resting_limit_order_sends_portfolio_update(ws, owner, token_for, streaming_agent):
    # given
    agent = streaming_agent
    token = await database_sync_to_async(token_for)(owner)
    communicator = await ws(token)
    await subscribe(communicator, channel="portfolio", agent_id=str(agent.id))

    # when a limit buy below the market rests open (10 x 50 = 500 reserved)
    response = await AsyncClient().post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "type": "limit", "limit_price": "50", "quantity": "10"},
        content_type="application/json",
        headers=_auth(token),
    )

    # then
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "open"
    [update] = await _portfolio_updates(communicator, 1)
    assert (update["reserved_cash"], update["available_cash"]) == ("500.00", "99500.00")
