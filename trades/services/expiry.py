"""Expiry of day orders whose simulated trading day has ended."""

from __future__ import annotations

from datetime import datetime

from api import problems
from observability.metrics import background_row_failed
from trades import market
from trades.choices import TimeInForce, TradeStatus
from trades.models import Trade
from trades.services.execution import trade_release


def orders_expire_day(*, now: datetime | None = None) -> int:
    """Expire ``open`` day orders whose simulated trading day has ended (reservations
    released, ``trade.updated`` published), oldest first, each in its own transaction. An
    order that cannot be expired is logged and counted (``background_row_failed``) and the
    others still expire; it is tried again on the next run. Returns how many expired."""
    day = market.market_day(now)
    due = list(
        Trade.objects.filter(
            status=TradeStatus.OPEN, time_in_force=TimeInForce.DAY, market_day__lt=day
        )
        .order_by("created_at")
        .values_list("pk", "agent_id", "symbol", "market_day")
    )
    expired = 0
    for trade_id, agent_id, symbol, trade_day in due:
        try:
            trade_release(
                trade=Trade(pk=trade_id, agent_id=agent_id, symbol=symbol),
                status=TradeStatus.EXPIRED,
                reason=f"Day order expired at the end of market day {trade_day}.",
            )
            expired += 1
        except problems.Conflict:
            continue  # filled or cancelled meanwhile
        except Exception:
            background_row_failed("day-orders", trade_id)
    return expired
