"""Reads of orders, scoped to what the user may see, and of portfolios at market prices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db.models import QuerySet

from agents.models import Agent
from agents.selectors import agent_id_for, portfolio_valuation
from api import problems
from metering.periods import DAILY, period_window
from trades import market
from trades.models import Trade


def trade_queryset_for(*, agent_id: UUID, owner_id: int | None = None) -> QuerySet[Trade]:
    """The orders of the agent ``agent_id``, newest first, with their approval request joined
    (no N+1). Whether the user may see them is the caller's check (``agent_id_for``).

    With ``owner_id``, only if the agent is that user's: the ownership is read in the same
    statement (a join to the agent), and an agent that is missing or another owner's has no
    orders here. An empty result then says nothing of the agent: the caller answers for it
    (``agents.selectors.agent_owner_id_for``).
    """
    if owner_id is None:
        trades = Trade.objects.filter(agent_id=agent_id)
    else:
        trades = Trade.objects.filter(agent_id=agent_id, agent__owner_id=owner_id)
    return trades.select_related("approval_request").order_by("-created_at", "-pk")


def trade_get_for(*, user, agent_id: UUID | str, trade_id: UUID | str) -> Trade:
    """One order of an agent ``user`` may see; ``problems.NotFound`` otherwise."""
    agent_pk = agent_id_for(user=user, agent_id=agent_id)
    trade = trade_queryset_for(agent_id=agent_pk).filter(pk=trade_id).first()
    if trade is None:
        raise problems.NotFound("No such trade.")
    return trade


def portfolio_for(agent: Agent) -> dict:
    """Cash, positions at current market prices, realized and unrealized P&L (SPEC §5).

    Two queries: the agent's open positions and the prices of their symbols.
    """
    positions = list(agent.positions.filter(quantity__gt=0))
    prices = market.prices_for({position.symbol for position in positions})
    return portfolio_valuation(agent=agent, positions=positions, prices=prices)


@dataclass(frozen=True)
class DailyTrades:
    """The agent's ``daily_trade_limit`` window: its orders accepted in the UTC day that
    contains ``now``, the limit, and when the window resets (the next midnight UTC)."""

    daily_trade_limit: int
    orders_today: int
    window_start: datetime
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(self.daily_trade_limit - self.orders_today, 0)


def daily_trades_for(*, agent: Agent, now: datetime) -> DailyTrades:
    """The agent's window of the server's own daily trade control, read from the count that
    ``trades.services.daily_trade_count`` keeps and enforces (``Agent.trades_on``), no query:
    its orders accepted in the UTC day of ``now``, which may exceed the limit once an
    operator lowered it during the day, and the next midnight UTC, when the window resets.
    """
    window_start, resets_at = period_window(DAILY, now)
    return DailyTrades(
        daily_trade_limit=int(agent.effective_config["daily_trade_limit"]),
        orders_today=agent.trades_on(window_start.date()),
        window_start=window_start,
        resets_at=resets_at,
    )
