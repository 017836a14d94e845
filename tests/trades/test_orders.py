"""Placing orders through HTTP: the rules 1-7 of SPEC §5 and what a fill does to the books."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import grpc
import pytest
from django.utils import timezone

from agents.models import Position
from metering.models import UsageEvent
from metering.services import usage_deliver_pending, usage_record
from oversight.models import ApprovalRequest
from tests.helpers import (
    agent_url,
    assert_books_balance,
    buffered_events,
    place_buys,
    problem_slug,
    submit,
    trades_url,
)
from trades import market
from trades.models import Fill, Trade

PROBLEMS = "/problems/"


def assert_nothing_persisted(agent) -> None:
    assert not Trade.objects.filter(agent=agent).exists()
    assert not UsageEvent.objects.filter(agent=agent, code="trade_executions").exists()
    assert not [e for e in buffered_events(agent) if e.event.startswith("trade.")]
    agent.refresh_from_db()
    assert agent.reserved_cash == 0
    assert agent.cash_balance == agent.budget


# --- the scripted session --------------------------------------------------------------------


def test_buy_then_sell_books_cash_position_and_realized_pnl(owner_client, agent):
    # given the market at AAPL 100.00 and an agent with 100,000
    # when it buys 10 AAPL at market
    bought = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="10")

    # then the order is filled at once, cash goes down by the fill notional, 10 shares held
    assert bought.status_code == 201
    body = bought.json()
    assert body["status"] == "filled"
    assert body["avg_fill_price"] == "100.00"
    assert body["notional"] == "1000.00"
    assert Decimal(body["filled_quantity"]) == 10
    assert body["reserved_amount"] == "0.00"
    assert body["approval_request_id"] is None
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("99000.00")
    assert agent.reserved_cash == 0
    assert Position.objects.get(agent=agent, symbol="AAPL").quantity == 10

    # when the price rises and it sells 5
    market.set_price("AAPL", "110.00")
    sold = submit(owner_client, agent, symbol="AAPL", side="sell", quantity="5")

    # then the gain on the shares sold is realized and the rest shows as unrealized
    assert sold.status_code == 201
    assert sold.json()["status"] == "filled"
    assert sold.json()["notional"] == "550.00"
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("99550.00")
    assert agent.realized_pnl == Decimal("50.00")
    portfolio = owner_client.get(agent_url(agent, "/portfolio")).json()
    assert portfolio["realized_pnl"] == "50.00"
    assert portfolio["unrealized_pnl"] == "50.00"
    assert portfolio["positions_value"] == "550.00"
    assert portfolio["total_value"] == "100100.00"
    [position] = portfolio["positions"]
    assert position["symbol"] == "AAPL"
    assert Decimal(position["quantity"]) == 5
    assert position["avg_price"] == "100.00"  # two decimals, as every price in the API
    assert position["current_price"] == "110.00"
    assert position["market_value"] == "550.00"
    assert_books_balance(agent)


def test_a_fill_records_usage_and_events_once(owner_client, agent):
    response = submit(owner_client, agent, symbol="MSFT", side="buy", quantity="3")
    trade_id = response.json()["id"]

    usage = {event.code: event for event in UsageEvent.objects.filter(agent=agent)}
    assert usage["trade_executions"].quantity == 1
    assert usage["trade_volume"].quantity == 600
    assert UsageEvent.objects.filter(agent=agent, code="trade_volume").count() == 1
    assert Fill.objects.filter(trade_id=trade_id).count() == 1
    events = [e.event for e in buffered_events(agent)]
    assert events == ["trade.created", "trade.filled", "portfolio.update"]
    # and the portfolio history is not written per fill (market ticks snapshot it)
    history = owner_client.get(agent_url(agent, "/portfolio/history")).json()
    assert [point["cash_balance"] for point in history] == ["100000.00"]


def test_rounding_of_fractional_fills_keeps_the_ledger_exact(owner_client, agent):
    market.set_price("TSLA", "33.33")
    submit(owner_client, agent, symbol="TSLA", side="buy", quantity="1.333333")
    submit(owner_client, agent, symbol="TSLA", side="buy", quantity="2.5")
    market.set_price("TSLA", "35.55")
    sold = submit(owner_client, agent, symbol="TSLA", side="sell", quantity="1.111111")
    assert sold.status_code == 201
    # 1.333333 x 33.33 = 44.4399889 → 44.44 ; 2.5 x 33.33 = 83.325 → 83.33 (half up)
    fills = list(Fill.objects.filter(trade__agent=agent).order_by("executed_at"))
    assert [fill.notional for fill in fills[:2]] == [Decimal("44.44"), Decimal("83.33")]
    assert_books_balance(agent)


def test_an_order_needing_approval_answers_202_and_reserves_cash(owner_client, agent):
    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="200")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending_approval"
    assert body["reserved_amount"] == "20000.00"
    approval = ApprovalRequest.objects.get(trade_id=body["id"])
    assert body["approval_request_id"] == str(approval.pk)
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("20000.00")
    assert agent.cash_balance == agent.budget
    assert UsageEvent.objects.filter(agent=agent, code="trade_executions").count() == 1
    assert_books_balance(agent)


# --- the rules, each with its problem type ----------------------------------------------------


def test_insufficient_cash_is_402_with_required_and_available(owner_client, agent):
    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1001")

    assert response.status_code == 402
    assert problem_slug(response) == "insufficient-funds"
    assert response.json()["required"] == "100100.00"
    assert response.json()["available"] == "100000.00"
    assert_nothing_persisted(agent)


def test_reserved_cash_is_not_available_to_another_order(owner_client, agent_factory, prices):
    agent = agent_factory(
        budget="10000", config={"max_position_fraction": "1", "approval_budget_fraction": "1"}
    )
    resting = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="60", type="limit",
        limit_price="90.00",
    )  # fmt: skip
    assert resting.json()["status"] == "open"

    response = submit(owner_client, agent, symbol="GOOGL", side="buy", quantity="100")

    assert response.status_code == 402
    assert response.json()["available"] == "4600.00"


def test_selling_more_than_held_is_422(owner_client, agent):
    assert submit(owner_client, agent, symbol="AAPL", side="sell", quantity="1").status_code == 422
    submit(owner_client, agent, symbol="AAPL", side="buy", quantity="10")

    response = submit(owner_client, agent, symbol="AAPL", side="sell", quantity="10.5")

    assert response.status_code == 422
    assert problem_slug(response) == "insufficient-position"
    assert Decimal(response.json()["available"]) == 10
    assert response.json()["detail"] == "Cannot sell 10.5 AAPL: 10 unreserved shares held."


def test_a_buy_past_max_position_fraction_is_422(owner_client, agent):
    # 30 % of 100,000 = 30,000 = 300 shares at 100
    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="301")

    assert response.status_code == 422
    assert problem_slug(response) == "position-limit"
    assert_nothing_persisted(agent)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"symbol": "NOPE", "side": "buy", "quantity": "1"}, "symbol"),
        ({"symbol": "AAPL", "side": "buy", "quantity": "-5"}, "quantity"),
        ({"symbol": "AAPL", "side": "buy", "quantity": "0"}, "quantity"),
        ({"symbol": "AAPL", "side": "buy", "quantity": "1", "type": "limit"}, "limit_price"),
        ({"symbol": "AAPL", "side": "buy", "quantity": "1", "type": "stop"}, "stop_price"),
        ({"symbol": "AAPL", "side": "hold", "quantity": "1"}, "side"),
        ({"symbol": "AAPL", "side": "buy", "quantity": "1", "time_in_force": "x"}, "time_in_force"),
        ({"symbol": "AAPL", "side": "buy", "quantity": "1", "limit_price": "99"}, "limit_price"),
        (
            {"symbol": "AAPL", "side": "buy", "quantity": "1", "metadata": {"confidence": 2}},
            "metadata",
        ),
        ({"symbol": "AAPL", "side": "buy", "quantity": "1", "status": "filled"}, "status"),
        ({"symbol": "AAPL", "side": "buy", "quantity": "1", "qty": "5"}, "qty"),
    ],
)
def test_invalid_orders_are_400_with_field_errors(owner_client, agent, body, field):
    response = owner_client.post(trades_url(agent), body, format="json")

    assert response.status_code == 400
    assert problem_slug(response) == "validation-error"
    assert field in response.json()["errors"]
    assert_nothing_persisted(agent)


def test_a_symbol_outside_allowed_symbols_is_400(owner_client, agent_factory, prices):
    agent = agent_factory(config={"allowed_symbols": ["MSFT"]})

    response = submit(owner_client, agent, symbol="aapl", side="buy", quantity="1")

    assert response.status_code == 400
    assert "symbol" in response.json()["errors"]
    assert submit(owner_client, agent, symbol="msft", side="buy", quantity="1").status_code == 201


def test_a_paused_agent_cannot_trade(owner_client, agent):
    paused = owner_client.patch(agent_url(agent), {"status": "paused"}, format="json")
    assert paused.status_code == 200

    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1")

    assert response.status_code == 409
    assert problem_slug(response) == "agent-not-active"
    assert_nothing_persisted(agent)


def test_exhausted_daily_trade_limit_is_429_with_retry_after(
    owner_client, agent_factory, prices, django_capture_on_commit_callbacks
):
    # given an agent allowed 2 trades a day (the limit is sent to metering after commit)
    with django_capture_on_commit_callbacks(execute=True):
        agent = agent_factory(config={"daily_trade_limit": 2})
    place_buys(owner_client, agent, 2)

    # when it places a third
    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1")

    # then the quota refuses it, and nothing of it remains
    assert response.status_code == 429
    assert problem_slug(response) == "quota-exceeded"
    assert int(response["Retry-After"]) > 0
    assert response.json()["limit"] == 2
    assert Trade.objects.filter(agent=agent).count() == 2
    assert UsageEvent.objects.filter(agent=agent, code="trade_executions").count() == 2


def test_usage_still_in_the_outbox_counts_against_the_quota_of_an_order(
    owner_client, agent_factory, prices, django_capture_on_commit_callbacks
):
    # given an agent allowed 5 trades a day by the metering service, which was told of 2
    # executions while 3 more (recorded through the API, no order of this server) still wait
    # in the outbox, and 1 from yesterday does too
    with django_capture_on_commit_callbacks(execute=True):
        agent = agent_factory(config={"daily_trade_limit": 5})
    for _ in range(2):
        usage_record(agent=agent, code="trade_executions", quantity=1)
    usage_deliver_pending()
    for _ in range(3):
        usage_record(agent=agent, code="trade_executions", quantity=1)
    yesterday = timezone.now() - timedelta(days=1)
    usage_record(agent=agent, code="trade_executions", quantity=1, occurred_at=yesterday)

    # when it places an order
    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1")

    # then the quota is used up: the undelivered usage of the day counts, yesterday's does not
    assert response.status_code == 429, response.content
    assert problem_slug(response) == "quota-exceeded"
    assert response.json()["detail"].endswith("(5 used, 1 requested).")
    assert not Trade.objects.filter(agent=agent).exists()


def test_oversight_down_is_503_and_persists_nothing(owner_client, agent, fresh_reference_services):
    fresh_reference_services.oversight.fail_with = grpc.StatusCode.UNAVAILABLE

    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1")

    assert response.status_code == 503
    assert problem_slug(response) == "service-unavailable"
    assert "Retry-After" in response
    assert_nothing_persisted(agent)
    assert not Position.objects.filter(agent=agent).exists()


def test_metering_down_is_503_and_persists_nothing(owner_client, agent, fresh_reference_services):
    fresh_reference_services.metering.fail_with = grpc.StatusCode.UNAVAILABLE

    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1")

    assert response.status_code == 503
    assert_nothing_persisted(agent)


def test_another_owners_agent_cannot_trade(client_for, other_owner, agent):
    response = submit(client_for(other_owner), agent, symbol="AAPL", side="buy", quantity="1")

    assert response.status_code == 404
    assert_nothing_persisted(agent)


def test_an_operator_may_trade_for_any_agent(client_for, operator, agent):
    response = submit(client_for(operator), agent, symbol="AAPL", side="buy", quantity="1")

    assert response.status_code == 201


def test_anonymous_is_401(anon_client, agent):
    assert submit(anon_client, agent, symbol="AAPL", side="buy", quantity="1").status_code == 401


# --- lists ------------------------------------------------------------------------------------


def test_trade_list_is_filtered_paginated_newest_first(owner_client, agent):
    for symbol in ["AAPL", "MSFT", "AAPL"]:
        submit(owner_client, agent, symbol=symbol, side="buy", quantity="1")
    submit(
        owner_client, agent, symbol="GOOGL", side="buy", quantity="1", type="limit",
        limit_price="10.00",
    )  # fmt: skip

    everything = owner_client.get(trades_url(agent)).json()
    assert everything["count"] == 4
    created = [trade["created_at"] for trade in everything["results"]]
    assert created == sorted(created, reverse=True)
    assert everything["results"][0]["symbol"] == "GOOGL"

    aapl = owner_client.get(trades_url(agent), {"symbol": "aapl", "side": "buy"}).json()
    assert aapl["count"] == 2
    open_orders = owner_client.get(trades_url(agent), {"status": "open"}).json()
    assert [trade["symbol"] for trade in open_orders["results"]] == ["GOOGL"]
    page = owner_client.get(trades_url(agent), {"page_size": 3, "page": 2}).json()
    assert len(page["results"]) == 1
    assert owner_client.get(trades_url(agent), {"status": "bogus"}).status_code == 400


def test_trade_list_without_a_filter_or_with_an_empty_one_lists_everything(owner_client, agent):
    for symbol in ["AAPL", "MSFT"]:
        submit(owner_client, agent, symbol=symbol, side="buy", quantity="1")

    # no filter parameter (the FilterSet is skipped), an unknown one, and empty values
    for query in ({}, {"page_size": 10}, {"colour": "red"}, {"symbol": "", "status": ""}):
        assert owner_client.get(trades_url(agent), query).json()["count"] == 2, query
    # a filter parameter still filters and is still validated
    assert owner_client.get(trades_url(agent), {"symbol": "msft"}).json()["count"] == 1
    assert owner_client.get(trades_url(agent), {"side": "sideways"}).status_code == 400


def test_trade_list_query_count_does_not_grow(
    owner_client, agent_factory, prices, django_assert_max_num_queries
):
    agent = agent_factory(config={"max_position_fraction": "1"})
    for index in range(12):
        body = {"symbol": "AAPL", "side": "buy", "quantity": "1"}
        if index % 3 == 0:  # some pending approval: their approval_request_id is joined
            body = {"symbol": "MSFT", "side": "buy", "quantity": "60"}
        submit(owner_client, agent, **body)

    # token, the page with the agent's owner (a short first page is its own count), and the
    # api_calls usage row the request is metered by
    with django_assert_max_num_queries(3):
        response = owner_client.get(trades_url(agent))
    assert response.json()["count"] == 12
    assert sum(1 for t in response.json()["results"] if t["approval_request_id"]) == 4


def test_trade_detail_and_another_owners_trade(owner_client, client_for, other_owner, agent):
    trade_id = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1").json()["id"]

    assert owner_client.get(trades_url(agent, trade_id)).json()["id"] == trade_id
    stranger = client_for(other_owner)
    assert stranger.get(trades_url(agent, trade_id)).status_code == 404
    assert stranger.delete(trades_url(agent, trade_id)).status_code == 404
    other_agent_url = trades_url(agent, "00000000-0000-0000-0000-000000000000")
    assert owner_client.get(other_agent_url).status_code == 404
