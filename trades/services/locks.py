"""The row locks of the order workflow, taken in one order everywhere: ``lock_rows``.

Every operation that changes an agent's money, orders or approval requests locks the agent
row first, then the agent's position rows, then the trade rows, then their approval requests.
Holding the agent row serialises every such operation of one agent, so concurrent orders,
fills, cancellations, decisions, expiries, the kill switch and reconciliation never spend
the same cash or shares twice, and never wait on each other in a cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import OuterRef, Q, QuerySet

from agents.models import Agent, Position
from oversight.models import ApprovalRequest
from trades import market
from trades.models import Trade

# ``symbols=ALL``: every position of the agent.
ALL = "all"


@dataclass
class Locked:
    """Rows locked by ``lock_rows``: fresh from the database, in the lock order."""

    agent: Agent
    positions: dict[str, Position] = field(default_factory=dict)
    # With ``prices``: the current price of each position's symbol.
    prices: dict[str, Decimal] = field(default_factory=dict)
    trade: Trade | None = None
    trades: list[Trade] = field(default_factory=list)
    approval: ApprovalRequest | None = None
    # With ``trades``: the approval requests of those trades, by trade id.
    approvals: dict = field(default_factory=dict)

    @property
    def position(self) -> Position | None:
        """The agent's position in the trade's symbol (None if it holds none)."""
        return self.positions.get(self.trade.symbol) if self.trade is not None else None


def lock_rows(
    *,
    agent_id=None,
    agent: Agent | None = None,
    symbols: Iterable[str] | str = (),
    trade_id=None,
    trades: Q | None = None,
    approval: bool = False,
    prices: bool = False,
) -> Locked:
    """Lock, inside the caller's transaction, the agent row (``agent_id``; or ``agent``, a
    row the caller locked already), its positions in ``symbols`` (``ALL``: every one), the
    trade ``trade_id`` or the agent's trades matching ``trades`` (oldest first; each read
    with its approval request's id), and, with ``approval``, their approval requests. With
    ``prices``, each position is read with its symbol's current price in the same statement
    (``Locked.prices``, as ``market.prices_for`` answers them), which locks the position rows
    only (``FOR UPDATE OF``), never a price row.

    The only place rows are locked for an order, so the order agent → positions → trades →
    approval request is written once.
    """
    if agent is None:
        agent = Agent.objects.select_for_update().get(pk=agent_id)
    locked = Locked(agent=agent)
    locked_positions = _positions_priced() if prices else Position.objects.select_for_update()
    if symbols == ALL:
        positions = locked_positions.filter(agent=agent)
    elif symbols:
        positions = locked_positions.filter(agent=agent, symbol__in=list(symbols))
    else:
        positions = []
    locked.positions = {position.symbol: position for position in positions}
    if prices:
        locked.prices = market.prices_completed(
            {symbol: position.market_price for symbol, position in locked.positions.items()}
        )
    if trade_id is not None:
        locked.trade = (
            Trade.objects.select_for_update(of=("self",))
            .select_related("approval_request")
            .get(pk=trade_id, agent=agent)
        )
        locked.trade.agent = agent
    if trades is not None:
        locked.trades = list(
            Trade.objects.select_for_update(of=("self",))
            .select_related("approval_request")
            .filter(trades, agent=agent)
            .order_by("created_at")
        )
        for trade in locked.trades:
            trade.agent = agent
    if approval and locked.trade is not None:
        locked.approval = (
            ApprovalRequest.objects.select_for_update()
            .prefetch_related("decisions")
            .filter(trade=locked.trade)
            .first()
        )
    if approval and locked.trades:
        locked.approvals = {
            request.trade_id: request
            for request in ApprovalRequest.objects.select_for_update().filter(
                trade__in=[trade.pk for trade in locked.trades]
            )
        }
    return locked


@functools.cache
def _positions_priced() -> QuerySet[Position]:
    """Positions to lock, each read with its symbol's current price (``market_price``, NULL
    while the symbol has no price row) in the same statement. Only the position rows are
    locked (``FOR UPDATE OF``): the price rows are read, never held.

    Built once, not per order: building the subquery costs the ORM more than reading it. The
    queryset itself is never evaluated; each use clones it (``filter``), so it is shared
    safely between requests and threads."""
    return Position.objects.select_for_update(of=("self",)).annotate(
        market_price=market.price_expression(OuterRef("symbol"))
    )


def lock_for_trade(trade: Trade, *, approval: bool = False) -> Locked:
    """``lock_rows`` for one order: its agent, its symbol's position, itself (and, with
    ``approval``, its approval request)."""
    return lock_rows(
        agent_id=trade.agent_id, symbols=(trade.symbol,), trade_id=trade.pk, approval=approval
    )
