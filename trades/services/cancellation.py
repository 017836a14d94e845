"""Cancellation of orders: by their owner, and all of an agent's by the kill switch."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from agents.choices import AgentStatus
from agents.models import Agent
from agents.services import agent_terminated_record
from api import problems
from grpc_clients.registry import deadline_budget
from oversight.choices import RequestStatus
from oversight.services import (
    ALREADY_CLOSED,
    CLOSED,
    approval_request_cancel,
    approval_request_withdraw,
)
from realtime.services import AgentEvents, agent_events
from trades.choices import OPEN_STATUSES, TradeStatus
from trades.models import Trade
from trades.services.approvals import approval_follow_service
from trades.services.execution import _release
from trades.services.locks import ALL, Locked, lock_for_trade, lock_rows

logger = logging.getLogger("trading_demo.trades")


def trade_cancel(*, trade: Trade, actor=None, reason: str = "") -> Trade:
    """Cancel an open or pending order: its reservation is released and, for a pending one,
    its approval request is cancelled too. A filled, rejected, expired or cancelled trade →
    409 ``conflict``.

    A pending order's request is closed on the oversight service first, before any lock
    (``approval_request_withdraw``), so a cancellation racing an operator's decision has one
    outcome on both sides: when the service had already closed it (an operator decided
    first), the server follows the service (``approval_follow_service``) and the
    cancellation then finds the order no longer pending (409). An unreachable service does
    not block a cancellation: it goes on locally and the service is told after commit."""
    request_reason = reason or "trade cancelled"
    with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
        withdrawn = approval_request_withdraw(trade=trade, actor=actor, reason=request_reason)
        if withdrawn is not None and withdrawn.outcome == ALREADY_CLOSED:
            try:
                approval_follow_service(approval_request_id=withdrawn.request_id)
            except Exception:
                logger.exception(
                    "could not follow the oversight service for %s", withdrawn.request_id
                )
    closed_remotely = withdrawn is not None and withdrawn.outcome == CLOSED
    with transaction.atomic():
        rows = lock_for_trade(trade, approval=True)
        if closed_remotely and rows.trade.status == TradeStatus.CANCELLED:
            return rows.trade  # a racing decision followed the service's cancellation here first
        with agent_events(rows.agent) as events:
            return _cancel(
                rows,
                events,
                actor=actor,
                reason=reason or "cancelled by the owner",
                request_reason=request_reason,
                closed_remotely=closed_remotely,
            )


def _cancel(
    rows: Locked,
    events: AgentEvents,
    *,
    actor,
    reason: str,
    request_reason: str,
    closed_remotely: bool,
) -> Trade:
    """Cancel the locked order of ``rows`` and its pending approval request."""
    trade = rows.trade
    if trade.status not in OPEN_STATUSES:
        raise problems.Conflict(f"A {trade.status} trade cannot be cancelled.")
    approval = rows.approval
    if approval is not None and approval.status == RequestStatus.PENDING:
        approval_request_cancel(
            approval_request=approval,
            events=events,
            actor=actor,
            reason=request_reason,
            closed_remotely=closed_remotely,
        )
    return _release(
        agent=rows.agent,
        trade=trade,
        position=rows.position,
        status=TradeStatus.CANCELLED,
        reason=reason,
        events=events,
    )


def agent_terminate(*, agent: Agent, actor) -> Agent:
    """The kill switch: the agent stops for good; the row and its history stay.

    In one transaction, under the agent's lock: every open or pending order is cancelled (its
    reservation released, its approval request cancelled, the oversight service told after
    commit: the kill switch works whatever the service says), then the agent is recorded
    terminated (``agents.services.agent_terminated_record``). Terminating a terminated agent
    changes nothing.
    """
    with transaction.atomic():
        # of=self: lock the agent, not its owner's user row joined for the Agent JSON.
        agent = (
            Agent.objects.select_for_update(of=("self",)).select_related("owner").get(pk=agent.pk)
        )
        if agent.status == AgentStatus.TERMINATED:
            return agent
        live = lock_rows(
            agent=agent, symbols=ALL, trades=Q(status__in=OPEN_STATUSES), approval=True
        )
        with agent_events(agent) as events:
            for trade in live.trades:
                _cancel(
                    Locked(
                        agent=agent,
                        positions=live.positions,
                        trade=trade,
                        approval=live.approvals.get(trade.pk),
                    ),
                    events,
                    actor=actor,
                    reason="agent terminated",
                    request_reason="agent terminated",
                    closed_remotely=False,
                )
            agent_terminated_record(agent=agent, actor=actor, events=events)
    return agent
