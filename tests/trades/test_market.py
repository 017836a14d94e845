"""The simulated market: prices over HTTP, the seeded random walk, ticks and snapshots."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from agents.models import PortfolioSnapshot
from tests.helpers import agent_url, submit, trades_url
from trades import market
from trades.models import MarketPrice
from trades.services import market_tick


def test_prices_of_every_symbol(owner_client, db):
    response = owner_client.get("/api/v1/market/prices")

    assert response.status_code == 200
    body = response.json()
    assert [row["symbol"] for row in body] == settings.MARKET_SYMBOLS
    assert all(Decimal(row["price"]) > 0 and row["timestamp"] for row in body)


def test_one_price_and_an_unknown_symbol(owner_client, prices):
    response = owner_client.get("/api/v1/market/prices/aapl")

    assert response.status_code == 200
    assert response.json()["symbol"] == "AAPL"
    assert response.json()["price"] == "100.00"
    assert owner_client.get("/api/v1/market/prices/NOPE").status_code == 404


def test_prices_need_authentication(anon_client, db):
    assert anon_client.get("/api/v1/market/prices").status_code == 401


def test_a_tick_moves_every_symbol_and_counts_its_seq(db):
    before = {row.symbol: (row.price, row.seq) for row in market.all_prices()}

    moved = market.tick(force=True)

    assert {row.symbol for row in moved} == set(settings.MARKET_SYMBOLS)
    for row in MarketPrice.objects.all():
        price, seq = before[row.symbol]
        assert row.seq == seq + 1
        assert abs(row.price - price) / price < Decimal("0.05")
        assert row.price == row.price.quantize(Decimal("0.01"))


def test_the_walk_is_reproducible_from_the_seed(db):
    start = {row.symbol: (row.price, row.seq) for row in market.all_prices()}
    first = [row.price for row in market.tick(force=True)]
    for symbol, (price, seq) in start.items():
        MarketPrice.objects.filter(pk=symbol).update(price=price, seq=seq)

    again = [row.price for row in market.tick(force=True)]

    assert again == first


def test_a_second_process_tick_within_the_interval_is_skipped(db):
    market.tick(force=True)

    assert market.tick() == []
    later = timezone.now() + timedelta(milliseconds=settings.MARKET_TICK_MS)
    assert len(market.tick(now=later)) == len(settings.MARKET_SYMBOLS)


def test_market_ticks_snapshot_holders_at_most_once_a_minute(owner_client, agent):
    submit(owner_client, agent, symbol="AAPL", side="buy", quantity="10")
    after_fill = PortfolioSnapshot.objects.filter(agent=agent).count()

    market_tick(force=True)
    assert PortfolioSnapshot.objects.filter(agent=agent).count() == after_fill

    later = timezone.now() + timedelta(minutes=2)
    result = market_tick(now=later, force=True)
    assert result["snapshots"] >= 1
    assert PortfolioSnapshot.objects.filter(agent=agent).count() == after_fill + 1
    history = owner_client.get(agent_url(agent, "/portfolio/history")).json()
    # the future snapshot is beyond "now" but inside the window
    assert len(history) == after_fill + 1


def test_the_next_tick_after_a_minute_records_a_fill_in_the_history(owner_client, agent):
    # given an agent that bought, then sold everything (it holds no shares any more)
    bought = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="10")
    market.set_price("AAPL", "110.00")
    sold = submit(owner_client, agent, symbol="AAPL", side="sell", quantity="10")
    assert [bought.json()["status"], sold.json()["status"]] == ["filled", "filled"]
    history_url = agent_url(agent, "/portfolio/history")
    assert [p["cash_balance"] for p in owner_client.get(history_url).json()] == ["100000.00"]

    # when the market ticks a minute after its last snapshot
    market_tick(now=timezone.now() + timedelta(minutes=2), force=True)

    # then its history shows the cash the round trip made, once
    assert [p["cash_balance"] for p in owner_client.get(history_url).json()] == [
        "100000.00",
        "100100.00",
    ]
    market_tick(now=timezone.now() + timedelta(minutes=4), force=True)
    assert PortfolioSnapshot.objects.filter(agent=agent).count() == 2


def test_market_tick_matches_resting_orders(owner_client, agent):
    # given a resting limit buy at 99 and the price put far below it, out of one step's reach
    order = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="1", type="limit",
        limit_price="99.00",
    ).json()  # fmt: skip
    assert order["status"] == "open"
    market.set_price("AAPL", "50.00")

    # when the market job ticks

    result = market_tick(now=timezone.now() + timedelta(seconds=5), force=True)

    # then the walk's new price crosses the limit and the matcher fills the order
    assert result["filled"] == 1
    trade = owner_client.get(trades_url(agent, order["id"])).json()
    assert trade["status"] == "filled"
    assert Decimal(trade["avg_fill_price"]) < Decimal("55")
