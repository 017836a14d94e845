"""The row locks of an order, taken in one order everywhere."""

from __future__ import annotations

from agents.models import Agent, Position
from trades.models import Trade


def _lock_position(agent: Agent, symbol: str) -> Position | None:
    return Position.objects.select_for_update().filter(agent=agent, symbol=symbol).first()


def _lock_for_trade(trade: Trade) -> tuple[Agent, Position | None, Trade]:
    """Lock agent, position and trade in the global lock order; return fresh rows. The trade
    comes with its approval request's id (not locked: oversight locks it after the trade)."""
    agent = Agent.objects.select_for_update().get(pk=trade.agent_id)
    position = _lock_position(agent, trade.symbol)
    trade = (
        Trade.objects.select_for_update(of=("self",))
        .select_related("approval_request")
        .get(pk=trade.pk)
    )
    trade.agent = agent
    return agent, position, trade
