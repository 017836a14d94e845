"""Helpers for order tests: a funded agent, a market at known prices, the ledger check."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum

from agents.models import Agent
from trades import market
from trades.choices import OPEN_STATUSES
from trades.models import Trade


@pytest.fixture
def prices(db):
    """Put the market at round prices so amounts are predictable."""
    fixed = {"AAPL": "100.00", "GOOGL": "50.00", "MSFT": "200.00", "AMZN": "80.00", "TSLA": "25.00"}
    for symbol, price in fixed.items():
        market.set_price(symbol, price)
    return {symbol: Decimal(price) for symbol, price in fixed.items()}


@pytest.fixture
def agent(agent_factory, prices):
    return agent_factory(budget="100000")


def trades_url(agent, trade_id=None) -> str:
    base = f"/api/v1/agents/{agent.pk}/trades"
    return f"{base}/{trade_id}" if trade_id else base


def submit(client, agent, **body):
    return client.post(trades_url(agent), body, format="json")


def assert_ledger(agent: Agent) -> None:
    """cash + Σ cost basis == budget + realized P&L, and reservations match open orders."""
    agent.refresh_from_db()
    cost = agent.positions.aggregate(total=Sum("cost_basis"))["total"] or Decimal("0")
    assert agent.cash_balance + cost == agent.budget + agent.realized_pnl
    reserved = Trade.objects.filter(agent=agent, status__in=OPEN_STATUSES).aggregate(
        total=Sum("reserved_amount")
    )["total"] or Decimal("0")
    assert agent.reserved_cash == reserved
    assert 0 <= agent.reserved_cash <= agent.cash_balance


@pytest.fixture(autouse=True)
def _postgres_only(request):
    """``@pytest.mark.postgres`` tests need row locks that really lock: skip them on SQLite."""
    if request.node.get_closest_marker("postgres"):
        from django.db import connection

        if connection.vendor != "postgresql":
            pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://…)")
