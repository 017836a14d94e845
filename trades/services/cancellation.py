"""Cancellation of an order by its owner."""

from __future__ import annotations

from django.db import transaction

from api import problems
from trades.choices import OPEN_STATUSES, TradeStatus
from trades.models import Trade
from trades.services.execution import _release
from trades.services.locks import _lock_for_trade


def trade_cancel(
    *, trade: Trade, actor=None, reason: str = "", oversight_first: bool = True
) -> Trade:
    """Cancel an open or pending order: its reservation is released and, for a pending one,
    its approval request is cancelled too. A filled, rejected, expired or cancelled trade →
    409 ``conflict``.

    A pending order's request is closed on the oversight service first, before any lock
    (``approval_request_withdraw``), so a cancellation racing an operator's decision has one
    outcome on both sides. ``oversight_first=False`` (the kill switch, which cancels under the
    agent's lock) cancels locally and tells the service after commit."""
    from oversight.choices import RequestStatus
    from oversight.models import ApprovalRequest
    from oversight.services import approval_request_cancel, approval_request_withdraw

    request_reason = reason or "trade cancelled"
    closed_remotely = False
    if oversight_first:
        closed_remotely = approval_request_withdraw(trade=trade, actor=actor, reason=request_reason)
    with transaction.atomic():
        agent, position, trade = _lock_for_trade(trade)
        if closed_remotely and trade.status == TradeStatus.CANCELLED:
            return trade  # a racing decision followed the service's cancellation here first
        if trade.status not in OPEN_STATUSES:
            raise problems.Conflict(f"A {trade.status} trade cannot be cancelled.")
        if trade.status == TradeStatus.PENDING_APPROVAL:
            approval = ApprovalRequest.objects.filter(trade=trade).first()
            if approval is not None and approval.status == RequestStatus.PENDING:
                approval_request_cancel(
                    approval_request=approval,
                    actor=actor,
                    reason=request_reason,
                    closed_remotely=closed_remotely,
                )
        return _release(
            agent=agent,
            trade=trade,
            position=position,
            status=TradeStatus.CANCELLED,
            reason=reason or "cancelled by the owner",
        )
