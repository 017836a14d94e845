"""Reads of agents and portfolios, scoped to what the user may see."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone

from agents.models import Agent, PortfolioSnapshot, Position
from agents.money import ZERO, cents
from agents.permissions import is_operator
from api import problems


def agent_queryset_for(user) -> QuerySet[Agent]:
    """The agents ``user`` may see: their own, or every agent for an operator."""
    queryset = Agent.objects.select_related("owner")
    if is_operator(user):
        return queryset
    return queryset.filter(owner_id=user.pk)


def agent_get_for(*, user, agent_id: UUID | str, lock: bool = False) -> Agent:
    """The agent ``agent_id`` if ``user`` may see it; otherwise ``problems.NotFound``.

    With ``lock=True`` the row is taken with ``SELECT … FOR UPDATE`` (call inside
    ``transaction.atomic``): the first lock of every balance-changing operation. Another
    owner's agent answers exactly like a missing one, so its existence is not disclosed.
    """
    try:
        pk = UUID(str(agent_id))
    except ValueError:
        raise problems.NotFound("No such agent.") from None
    agents = Agent.objects.select_for_update() if lock else Agent.objects.all()
    try:
        agent = agents.get(pk=pk)
    except Agent.DoesNotExist:
        raise problems.NotFound("No such agent.") from None
    if agent.owner_id != user.pk and not is_operator(user):
        raise problems.NotFound("No such agent.")
    if agent.owner_id == user.pk:
        agent.owner = user  # the owner is the user at hand: agent.owner costs no query
    return agent


def portfolio_valuation(
    *, agent: Agent, positions: list[Position], prices: dict[str, Decimal]
) -> dict:
    """The SPEC portfolio document for ``agent`` valued at ``prices`` (symbol → price).

    Positions with no shares left are omitted. Money is rounded to cents.
    """
    rows = []
    positions_value = ZERO
    unrealized = ZERO
    for position in positions:
        if position.quantity <= 0:
            continue
        price = prices[position.symbol]
        market_value = cents(position.quantity * price)
        pnl = market_value - position.cost_basis
        positions_value += market_value
        unrealized += pnl
        rows.append(
            {
                "symbol": position.symbol,
                "quantity": position.quantity,
                "reserved_quantity": position.reserved_quantity,
                "avg_price": position.avg_price,
                "cost_basis": position.cost_basis,
                "current_price": cents(price),
                "market_value": market_value,
                "unrealized_pnl": pnl,
            }
        )
    return {
        "agent_id": agent.pk,
        "cash_balance": agent.cash_balance,
        "reserved_cash": agent.reserved_cash,
        "available_cash": agent.available_cash,
        "positions_value": positions_value,
        "total_value": agent.cash_balance + positions_value,
        "realized_pnl": agent.realized_pnl,
        "unrealized_pnl": unrealized,
        "positions": rows,
        "updated_at": timezone.now(),
    }


def portfolio_for(agent: Agent) -> dict:
    """Cash, positions at current market prices, realized and unrealized P&L (SPEC §5).

    Two queries: the agent's open positions and the prices of their symbols.
    """
    from trades.market import prices_for

    positions = list(agent.positions.filter(quantity__gt=0))
    prices = prices_for({position.symbol for position in positions})
    return portfolio_valuation(agent=agent, positions=positions, prices=prices)


def portfolio_history(agent: Agent, days: int = 30) -> list[dict]:
    """Snapshots of the agent's valuation over the last ``days`` days, oldest first."""
    since = timezone.now() - timedelta(days=days)
    return list(
        PortfolioSnapshot.objects.filter(agent=agent, timestamp__gte=since)
        .order_by("timestamp")
        .values("timestamp", "total_value", "cash_balance")
    )
