"""Resting orders: limit, stop and stop-limit orders wait for the price feed; ioc/fok do not;
cancelling or expiring one gives its reservation back."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from agents.models import Position
from tests.helpers import assert_books_balance, buffered_events, submit, trades_url
from trades import market
from trades.models import Trade
from trades.services import orders_expire_day, orders_match


def move(symbol: str, price: str) -> int:
    """Drive the feed deterministically: set the price, then run the matcher."""
    market.set_price(symbol, price)
    return orders_match()


def get_trade(client, agent, trade_id) -> dict:
    return client.get(trades_url(agent, trade_id)).json()


def test_a_limit_buy_below_the_market_rests_then_fills_when_crossed(owner_client, agent):
    # given AAPL at 100, a limit buy at 95 rests open with 10 x 95 reserved
    response = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="10", type="limit",
        limit_price="95.00", time_in_force="gtc",
    )  # fmt: skip
    assert response.status_code == 201
    trade = response.json()
    assert trade["status"] == "open"
    assert trade["reserved_amount"] == "950.00"
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("950.00")
    assert_books_balance(agent)

    # when the price falls but not to the limit, nothing happens
    assert move("AAPL", "95.01") == 0
    assert get_trade(owner_client, agent, trade["id"])["status"] == "open"

    # when it falls through the limit, the order fills at the (better) market price
    assert move("AAPL", "94.00") == 1
    filled = get_trade(owner_client, agent, trade["id"])
    assert filled["status"] == "filled"
    assert filled["avg_fill_price"] == "94.00"
    assert filled["notional"] == "940.00"
    assert filled["reserved_amount"] == "0.00"
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("99060.00")
    assert agent.reserved_cash == 0
    assert Position.objects.get(agent=agent, symbol="AAPL").quantity == 10
    assert_books_balance(agent)
    events = [e.event for e in buffered_events(agent)]
    # the reservation, then the fill, each change the portfolio
    assert events == ["trade.created", "portfolio.update", "trade.filled", "portfolio.update"]


def test_a_marketable_limit_fills_at_once_at_the_better_price(owner_client, agent):
    buy = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="2", type="limit",
        limit_price="105.00",
    ).json()  # fmt: skip
    assert buy["status"] == "filled"
    assert buy["avg_fill_price"] == "100.00"
    sell = submit(
        owner_client, agent, symbol="AAPL", side="sell", quantity="2", type="limit",
        limit_price="90.00",
    ).json()  # fmt: skip
    assert sell["status"] == "filled"
    assert sell["avg_fill_price"] == "100.00"
    assert_books_balance(agent)


def test_a_resting_limit_sell_holds_its_shares_until_it_fills(owner_client, agent):
    submit(owner_client, agent, symbol="AAPL", side="buy", quantity="10")
    sell = submit(
        owner_client, agent, symbol="AAPL", side="sell", quantity="10", type="limit",
        limit_price="110.00",
    ).json()  # fmt: skip
    assert sell["status"] == "open"

    # the shares are reserved for it: nothing else can sell them
    again = submit(owner_client, agent, symbol="AAPL", side="sell", quantity="1")
    assert again.status_code == 422

    assert move("AAPL", "111.50") == 1
    assert get_trade(owner_client, agent, sell["id"])["avg_fill_price"] == "111.50"
    agent.refresh_from_db()
    assert agent.realized_pnl == Decimal("115.00")
    assert_books_balance(agent)


def test_a_stop_buy_triggers_at_its_stop_price(owner_client, agent):
    stop = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="10", type="stop",
        stop_price="105.00",
    ).json()  # fmt: skip
    assert stop["status"] == "open"
    assert stop["reserved_amount"] == "1000.00"  # at the market price when placed

    assert move("AAPL", "104.99") == 0
    assert move("AAPL", "106.00") == 1

    filled = get_trade(owner_client, agent, stop["id"])
    assert filled["avg_fill_price"] == "106.00"
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("98940.00")
    assert_books_balance(agent)


def test_a_stop_limit_sell_triggers_then_waits_for_its_limit(owner_client, agent):
    submit(owner_client, agent, symbol="AAPL", side="buy", quantity="10")
    order = submit(
        owner_client, agent, symbol="AAPL", side="sell", quantity="10", type="stop_limit",
        stop_price="95.00", limit_price="94.00", time_in_force="gtc",
    ).json()  # fmt: skip
    assert order["status"] == "open"

    assert move("AAPL", "96.00") == 0
    # the stop is hit, but at 93 the sell limit of 94 is not
    assert move("AAPL", "93.00") == 0
    assert Trade.objects.get(pk=order["id"]).stop_triggered
    assert get_trade(owner_client, agent, order["id"])["status"] == "open"
    # back up to 94.50: sells at the market, above its limit
    assert move("AAPL", "94.50") == 1
    assert get_trade(owner_client, agent, order["id"])["avg_fill_price"] == "94.50"
    agent.refresh_from_db()
    assert agent.realized_pnl == Decimal("-55.00")
    assert_books_balance(agent)


def test_a_stop_buy_that_no_longer_fits_the_cash_is_rejected(owner_client, agent_factory, prices):
    agent = agent_factory(
        budget="1000", config={"max_position_fraction": "1", "approval_budget_fraction": "1"}
    )
    stop = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="9", type="stop",
        stop_price="105.00",
    ).json()  # fmt: skip
    assert stop["reserved_amount"] == "900.00"

    move("AAPL", "120.00")  # 9 x 120 = 1080 > 1000

    rejected = get_trade(owner_client, agent, stop["id"])
    assert rejected["status"] == "rejected"
    assert "Insufficient funds" in rejected["rejection_reason"]
    agent.refresh_from_db()
    assert agent.reserved_cash == 0
    assert agent.cash_balance == Decimal("1000.00")


def test_ioc_and_fok_that_cannot_fill_at_once_are_cancelled(owner_client, agent):
    for time_in_force in ("ioc", "fok"):
        response = submit(
            owner_client, agent, symbol="AAPL", side="buy", quantity="1", type="limit",
            limit_price="90.00", time_in_force=time_in_force,
        )  # fmt: skip
        assert response.status_code == 201
        assert response.json()["status"] == "cancelled"
        assert response.json()["reserved_amount"] == "0.00"
    filled = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="1", time_in_force="ioc"
    )
    assert filled.json()["status"] == "filled"
    agent.refresh_from_db()
    assert agent.reserved_cash == 0
    assert_books_balance(agent)


def test_cancelling_a_resting_order_releases_its_reservation(owner_client, agent):
    order = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="10", type="limit",
        limit_price="90.00",
    ).json()  # fmt: skip
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("900.00")

    response = owner_client.delete(trades_url(agent, order["id"]))

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancelled_at"] is not None
    agent.refresh_from_db()
    assert agent.reserved_cash == 0
    assert agent.available_cash == agent.budget
    # a cancelled order never fills, and cannot be cancelled twice
    assert move("AAPL", "80.00") == 0
    assert owner_client.delete(trades_url(agent, order["id"])).status_code == 409
    assert len(buffered_events(agent, event="trade.cancelled")) == 1
    assert_books_balance(agent)


def test_cancelling_a_resting_sell_frees_its_shares(owner_client, agent):
    submit(owner_client, agent, symbol="AAPL", side="buy", quantity="4")
    order = submit(
        owner_client, agent, symbol="AAPL", side="sell", quantity="4", type="limit",
        limit_price="150.00",
    ).json()  # fmt: skip
    assert Position.objects.get(agent=agent, symbol="AAPL").reserved_quantity == 4

    owner_client.delete(trades_url(agent, order["id"]))

    assert Position.objects.get(agent=agent, symbol="AAPL").reserved_quantity == 0
    assert submit(owner_client, agent, symbol="AAPL", side="sell", quantity="4").status_code == 201


def test_a_filled_order_cannot_be_cancelled(owner_client, agent):
    trade_id = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1").json()["id"]

    response = owner_client.delete(trades_url(agent, trade_id))

    assert response.status_code == 409
    assert response.json()["type"].rstrip("/").endswith("conflict")


def test_cancelling_a_pending_order_cancels_its_approval_request(owner_client, agent):
    order = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="150").json()
    assert order["status"] == "pending_approval"

    response = owner_client.delete(trades_url(agent, order["id"]))

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    trade = Trade.objects.select_related("approval_request").get(pk=order["id"])
    assert trade.approval_request.status == "cancelled"
    agent.refresh_from_db()
    assert agent.reserved_cash == 0


def test_a_day_order_expires_at_the_day_boundary_and_gtc_does_not(owner_client, agent):
    day = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="10", type="limit",
        limit_price="90.00",
    ).json()  # fmt: skip
    gtc = submit(
        owner_client, agent, symbol="MSFT", side="buy", quantity="1", type="limit",
        limit_price="150.00", time_in_force="gtc",
    ).json()  # fmt: skip
    today = market.market_day()

    # the same day: nothing expires
    assert orders_expire_day() == 0
    # the next simulated day
    tomorrow = market.day_end(today) + timedelta(seconds=1)
    assert orders_expire_day(now=tomorrow) == 1

    expired = get_trade(owner_client, agent, day["id"])
    assert expired["status"] == "expired"
    assert expired["reserved_amount"] == "0.00"
    assert get_trade(owner_client, agent, gtc["id"])["status"] == "open"
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("150.00")
    assert_books_balance(agent)


def test_the_day_is_market_day_seconds_long(settings):
    settings.MARKET_DAY_SECONDS = 60
    now = timezone.now()
    assert market.market_day(now + timedelta(seconds=60)) == market.market_day(now) + 1
    assert now < market.day_end(market.market_day(now)) <= now + timedelta(seconds=60)


def test_matching_only_touches_crossed_orders(owner_client, agent):
    far = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="1", type="limit",
        limit_price="50.00", time_in_force="gtc",
    ).json()  # fmt: skip
    near = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="1", type="limit",
        limit_price="99.00", time_in_force="gtc",
    ).json()  # fmt: skip
    other_symbol = submit(
        owner_client, agent, symbol="MSFT", side="buy", quantity="1", type="limit",
        limit_price="199.00", time_in_force="gtc",
    ).json()  # fmt: skip

    assert move("AAPL", "98.00") == 1

    statuses = {t["id"]: t["status"] for t in owner_client.get(trades_url(agent)).json()["results"]}
    assert statuses == {far["id"]: "open", near["id"]: "filled", other_symbol["id"]: "open"}
