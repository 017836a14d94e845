"""The market: ticks, and the matching of resting orders they cross."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.money import cents
from agents.selectors import snapshot_due_agents
from agents.services import portfolio_snapshots_record
from observability.metrics import background_row_failed
from realtime.services import agent_events
from trades import market
from trades.choices import OrderType, Side, TradeStatus
from trades.models import Trade
from trades.services.execution import _fill, _fill_price, _publish_trade
from trades.services.locks import lock_for_trade
from trades.validation import STOP_TYPES


def _crossing(symbol: str, price: Decimal) -> Q:
    """Open orders of ``symbol`` that a market price of ``price`` executes or triggers."""
    buy, sell = Q(side=Side.BUY), Q(side=Side.SELL)
    live_limit = Q(type=OrderType.LIMIT) | Q(type=OrderType.STOP_LIMIT, stop_triggered=True)
    untriggered = Q(type__in=STOP_TYPES, stop_triggered=False)
    return Q(symbol=symbol) & (
        (live_limit & buy & Q(limit_price__gte=price))
        | (live_limit & sell & Q(limit_price__lte=price))
        | (untriggered & buy & Q(stop_price__lte=price))
        | (untriggered & sell & Q(stop_price__gte=price))
    )


def orders_match(*, prices: dict[str, Decimal] | None = None) -> int:
    """The matcher: execute (or trigger) resting orders that ``prices`` cross.

    ``prices`` defaults to the current price of every symbol. Each order is matched in its
    own transaction under the agent lock, re-checked there (it may have been cancelled
    meanwhile). Returns the number of orders filled. One order failing does not stop the
    others: it is logged and counted (``background_row_failed``) and tried on the next tick.
    """
    if prices is None:
        prices = {row.symbol: cents(row.price) for row in market.all_prices()}
    if not prices:
        return 0
    crossing = Q()
    for symbol, price in prices.items():
        crossing |= _crossing(symbol, price)
    candidates = list(
        Trade.objects.filter(status=TradeStatus.OPEN)
        .filter(crossing)
        .order_by("created_at")
        .values_list("pk", "agent_id", "symbol")
    )
    filled = 0
    for trade_id, agent_id, symbol in candidates:
        try:
            filled += _match_one(
                trade=Trade(pk=trade_id, agent_id=agent_id, symbol=symbol), price=prices[symbol]
            )
        except Exception:
            background_row_failed("matching", trade_id)
    return filled


def _match_one(*, trade: Trade, price: Decimal) -> int:
    with transaction.atomic():
        rows = lock_for_trade(trade)
        agent, position, trade = rows.agent, rows.position, rows.trade
        if trade.status != TradeStatus.OPEN:
            return 0
        was_triggered = trade.stop_triggered
        fill_price = _fill_price(trade, price)
        with agent_events(agent) as events:
            if fill_price is None:
                if trade.stop_triggered != was_triggered:
                    trade.save(update_fields=["stop_triggered", "updated_at"])
                    _publish_trade(trade, "trade.updated", events)
                return 0
            _fill(agent=agent, trade=trade, position=position, price=fill_price, events=events)
        return int(trade.status == TradeStatus.FILLED)


def portfolio_snapshots_take(*, now: datetime | None = None) -> int:
    """Snapshot, at current market prices, the portfolio of every agent due a point of its
    history (``agents.selectors.snapshot_due_agents``: at most one a minute, only while it
    holds shares or was active). Returns how many were stored; an agent whose snapshot
    fails is logged and skipped.

    Four queries whatever the number of agents: agents, their positions, prices, insert.
    """
    now = now or timezone.now()
    agents = snapshot_due_agents(now=now)
    if not agents:
        return 0
    prices = market.prices_for({p.symbol for agent in agents for p in agent.positions.all()})
    return portfolio_snapshots_record(agents=agents, prices=prices, now=now)


def market_tick(*, now: datetime | None = None, force: bool = False) -> dict:
    """One market step (the periodic job): move prices, match resting orders, and snapshot
    the portfolios that moved (``portfolio_snapshots_take``: at most once a minute each)."""
    rows = market.tick(now=now, force=force)
    if not rows:
        return {"ticked": 0, "filled": 0, "snapshots": 0}
    filled = orders_match(prices={row.symbol: cents(row.price) for row in rows})
    snapshots = portfolio_snapshots_take(now=now)
    return {"ticked": len(rows), "filled": filled, "snapshots": snapshots}
