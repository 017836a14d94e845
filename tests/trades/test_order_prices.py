"""The prices an order is checked, executed and valued at when the market has no row yet for a
symbol, and when the symbol is not read with the agent before the lock."""

from __future__ import annotations

from decimal import Decimal

from agents.models import Position
from tests.helpers import buffered_events, submit
from trades import market
from trades.models import MarketPrice


def test_an_order_in_a_symbol_without_a_price_row_executes_at_its_base_price(
    owner_client, agent_factory
):
    # given a market that has never priced AAPL
    agent = agent_factory(budget="100000")
    assert not MarketPrice.objects.filter(pk="AAPL").exists()

    # when the agent buys it at market
    response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="2")

    # then it fills at the base price, which is now the symbol's row
    assert response.status_code == 201, response.json()
    base = market.base_price("AAPL")
    assert Decimal(response.json()["avg_fill_price"]) == base
    assert MarketPrice.objects.get(pk="AAPL").price == base


def test_the_portfolio_event_values_a_held_symbol_without_a_price_row_at_its_base_price(
    owner_client, agent, prices
):
    # given an agent holding MSFT, whose price row is gone
    assert submit(owner_client, agent, symbol="MSFT", side="buy", quantity="1").status_code == 201
    MarketPrice.objects.filter(pk="MSFT").delete()

    # when it buys another symbol
    assert submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1").status_code == 201

    # then its portfolio shows MSFT at the base price, and AAPL at the price it was bought at
    update = buffered_events(agent, event="portfolio.update")[-1]
    shown = {row["symbol"]: row["current_price"] for row in update.data["positions"]}
    assert shown == {"AAPL": str(prices["AAPL"]), "MSFT": str(market.base_price("MSFT"))}
    assert MarketPrice.objects.get(pk="MSFT").price == market.base_price("MSFT")


def test_a_symbol_named_by_a_number_is_checked_on_its_own_reads(owner_client, agent, settings):
    # given a market symbol that a body can name with a JSON number
    settings.MARKET_SYMBOLS = [*settings.MARKET_SYMBOLS, "123"]

    # when the agent buys 2 and sells 1 of it
    bought = submit(owner_client, agent, symbol=123, side="buy", quantity="2")
    sold = submit(owner_client, agent, symbol=123, side="sell", quantity="1")
    refused = submit(owner_client, agent, symbol=123, side="sell", quantity="5")

    # then the buy fills at its base price, the sell sees the shares bought, a sell of more
    # than is held is refused
    assert bought.status_code == 201, bought.json()
    assert Decimal(bought.json()["avg_fill_price"]) == market.base_price("123")
    assert sold.status_code == 201, sold.json()
    assert refused.status_code == 422
    assert Position.objects.get(agent=agent, symbol="123").quantity == 1
