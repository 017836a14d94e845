"""The Trade JSON is one document: what ``TradeSerializer``'s declared DRF fields produce is what
``trade_representation`` builds, and what the REST API and the live events both answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from tests.helpers import agent_url, buffered_events, submit, trades_url
from trades.api.serializers import TradeSerializer
from trades.models import Trade
from trades.representation import approval_request_id, trade_representation


def trade_json(trade: Trade) -> dict:
    return trade_representation(trade, approval_request_id=approval_request_id(trade))


def drf_json(trade: Trade) -> dict:
    """What the serializer's declared fields produce (DRF's own field-by-field path)."""
    return dict(serializers.ModelSerializer.to_representation(TradeSerializer(), trade))


def test_the_orders_of_a_session_serialize_as_drf_does(owner_client, agent):
    # given orders in every shape the API answers: filled, pending approval (with its approval
    # request), resting limit and stop orders with prices, a cancelled one, metadata
    answers = [
        submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1.5"),
        submit(owner_client, agent, symbol="MSFT", side="buy", quantity="60"),
        submit(
            owner_client,
            agent,
            symbol="GOOGL",
            side="buy",
            type="limit",
            limit_price="10.5",
            quantity="3",
            client_order_id="resting-1",
            metadata={"strategy": "mean-reversion", "rationale": "below its 20-day mean"},
        ),
        submit(
            owner_client,
            agent,
            symbol="AAPL",
            side="sell",
            type="stop",
            stop_price="50",
            quantity="1",
        ),
    ]
    assert [a.status_code for a in answers] == [201, 202, 201, 201]
    cancelled = answers[2].json()["id"]
    assert owner_client.delete(trades_url(agent, cancelled)).status_code == 200

    # then every stored order serializes the same both ways, and the pending one names its request
    trades = list(Trade.objects.filter(agent=agent).select_related("approval_request"))
    assert len(trades) == 4
    for trade in trades:
        assert trade_json(trade) == drf_json(trade)
    pending = next(t for t in trades if t.status == "pending_approval")
    assert trade_json(pending)["approval_request_id"] is not None
    # and the API's list answers the same JSON, in its order, filtered or not
    newest_first = sorted(trades, key=lambda t: (t.created_at, t.pk), reverse=True)
    by_notional = sorted(trades, key=lambda t: t.notional)
    assert len({t.notional for t in trades}) == len(trades)  # one order by notional
    for query, expected in [
        ("", newest_first),
        ("?ordering=notional", by_notional),
        ("?status=pending_approval", [pending]),
        ("?symbol=aapl&page_size=1", [t for t in newest_first if t.symbol == "AAPL"][:1]),
    ]:
        listed = owner_client.get(agent_url(agent, f"/trades{query}")).json()["results"]
        assert listed == [drf_json(t) for t in expected], query


def test_each_orders_last_live_event_is_what_the_rest_api_answers(owner_client, agent):
    # given orders that end filled, pending approval (with a request), resting and cancelled
    filled = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="2").json()
    pending = submit(owner_client, agent, symbol="MSFT", side="buy", quantity="60").json()
    limit = {"side": "buy", "type": "limit", "limit_price": "10", "quantity": "1"}
    resting = submit(owner_client, agent, symbol="GOOGL", **limit).json()
    cancelled = submit(owner_client, agent, symbol="TSLA", **limit).json()
    assert owner_client.delete(trades_url(agent, cancelled["id"])).status_code == 200
    assert pending["approval_request_id"] is not None

    # then the WebSocket's last event of each order is the REST API's document of it
    for order in (filled, pending, resting, cancelled):
        events = buffered_events(agent, channel="trades")
        last = [e for e in events if e.data["id"] == order["id"]][-1]
        assert last.data == owner_client.get(trades_url(agent, order["id"])).json()


amounts = st.decimals(
    min_value=Decimal("-99999999"), max_value=Decimal("99999999"), places=8, allow_nan=False
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(timezone(timedelta(hours=-5))),
)


@settings(max_examples=200, deadline=None)
@given(
    quantity=amounts,
    price=amounts | st.none() | st.integers(min_value=0, max_value=10**9),
    moment=moments,
    later=moments | st.none(),
)
@pytest.mark.django_db
def test_amounts_and_times_round_and_format_as_drf_does(quantity, price, moment, later):
    # given an unsaved trade with arbitrary amounts (rounding halfway cases included) and times
    trade = Trade(
        agent_id="00000000-0000-0000-0000-000000000001",
        symbol="AAPL",
        side="buy",
        type="limit",
        time_in_force="gtc",
        quantity=quantity,
        limit_price=price,
        stop_price=price,
        status="open",
        filled_quantity=quantity,
        avg_fill_price=price,
        notional=quantity,
        reserved_amount=quantity,
        created_at=moment,
        updated_at=moment,
        filled_at=later,
        cancelled_at=later,
    )
    # then both ways give the same JSON
    assert trade_json(trade) == drf_json(trade)
