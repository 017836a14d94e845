"""Helpers of the reliability tests: the full ledger check, a market at known prices, races."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from agents.models import Agent, Position
from agents.money import whole_dollars
from metering.models import UsageEvent
from trades import market
from trades.choices import OPEN_STATUSES, Side
from trades.models import Fill, Trade

FIXED_PRICES = {"AAPL": "100.00", "GOOGL": "50.00", "MSFT": "200.00", "AMZN": "80.00"}
NO_APPROVAL = {
    "auto_approval_limit": "1000000",
    "approval_budget_fraction": "1",
    "max_position_fraction": "1",
    "daily_trade_limit": 1000,
}


@pytest.fixture(autouse=True)
def _postgres_only(request):
    """``@pytest.mark.postgres`` tests need row locks that really lock: skip them on SQLite."""
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://…)")


@pytest.fixture
def prices(db):
    """The market at round prices, so an order's notional is known in advance."""
    for symbol, price in FIXED_PRICES.items():
        market.set_price(symbol, price)
    return {symbol: Decimal(price) for symbol, price in FIXED_PRICES.items()}


def trades_url(agent, trade_id=None) -> str:
    base = f"/api/v1/agents/{agent.pk}/trades"
    return f"{base}/{trade_id}" if trade_id else base


def assert_books_balance(agent: Agent) -> None:
    """Every ledger invariant of one agent, read fresh from the database.

    cash ≥ 0; 0 ≤ reserved_cash ≤ cash and equal to the open/pending buys' holds; each
    position ≥ 0 with reserved shares equal to its open/pending sells' holds; cash + Σ cost
    basis == budget + realized P&L; every fill metered once (``trade_volume``) and every
    accepted order once (``trade_executions``).
    """
    agent.refresh_from_db()
    live = Trade.objects.filter(agent=agent, status__in=OPEN_STATUSES)
    held_cash = live.filter(side=Side.BUY).aggregate(t=Sum("reserved_amount"))["t"] or Decimal(0)
    assert agent.cash_balance >= 0
    assert agent.reserved_cash == held_cash
    assert 0 <= agent.reserved_cash <= agent.cash_balance
    for position in Position.objects.filter(agent=agent):
        held = live.filter(side=Side.SELL, symbol=position.symbol).aggregate(
            t=Sum("reserved_quantity")
        )["t"] or Decimal(0)
        assert position.quantity >= 0
        assert position.cost_basis >= 0
        assert position.reserved_quantity == held, position.symbol
    cost = Position.objects.filter(agent=agent).aggregate(t=Sum("cost_basis"))["t"] or Decimal(0)
    assert agent.cash_balance + cost == agent.budget + agent.realized_pnl
    assert (
        not Trade.objects.filter(agent=agent)
        .exclude(status__in=OPEN_STATUSES)
        .filter(reserved_amount__gt=0)
        .exists()
    )
    fills = Fill.objects.filter(trade__agent=agent)
    volume = UsageEvent.objects.filter(agent=agent, code="trade_volume")
    assert sorted((e.transaction_id, e.quantity) for e in volume) == sorted(
        (f"server:trade_volume:{f.trade_id}", whole_dollars(f.notional)) for f in fills
    )
    executions = UsageEvent.objects.filter(agent=agent, code="trade_executions")
    assert sorted(e.transaction_id for e in executions) == sorted(
        f"server:trade_executions:{pk}"
        for pk in Trade.objects.filter(agent=agent).values_list("pk", flat=True)
    )


# PostgreSQL allows 100 connections by default and other test runs share the server: at most
# this many racing threads hold a database session at once (all of them still race for the
# same agent row; the agent lock serialises them anyway).
MAX_DB_SESSIONS = 40


def race(count: int, call, *, timeout: float = 60.0) -> list:
    """Run ``call(index)`` in ``count`` threads released together by a barrier.

    Returns the results in index order (an exception is returned as the result). Each thread
    closes its own database connection; at most ``MAX_DB_SESSIONS`` are open at once. Fails if
    a thread is still running after ``timeout``.
    """
    barrier = threading.Barrier(count, timeout=timeout)
    sessions = threading.BoundedSemaphore(MAX_DB_SESSIONS)
    results: list = [None] * count

    def worker(index: int) -> None:
        try:
            barrier.wait()
            with sessions:
                try:
                    results[index] = call(index)
                finally:
                    connection.close()
        except Exception as exc:  # surfaced by the caller's assertions
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return results
