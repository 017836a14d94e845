"""Orders waiting for a human: an operator's decision, the service's outcome, expiry.

The oversight service is the record of decisions; ``oversight.services`` mirrors it. Here the
order workflow drives a waiting order to its end: a decision goes to the service first (if it
cannot be reached the API answers 503 and nothing changes here); then, under the row locks
(``lock_rows``: agent → position → trade → approval request) and after re-checking that the
request is still pending, the decision is recorded and the order executed or released, so
concurrent approvals, rejections, cancellations and expiry produce exactly one outcome.

A decision the service accepted is recorded here too, whatever happens next (both places or
neither): the service is the record, so the mirror follows it rather than the other way round.

- The decision is written first, under the locks; the trade's execution runs in a savepoint
  after it. An execution that fails (a database error, a broken row) is rolled back alone:
  the request stays approved, as on the service, and the trade ends ``rejected`` with its
  reservation released and the reason given (as when funds no longer cover it at approval).
- If even the decision cannot be written, the mirror is brought in line with the service at
  once (``approval_follow_service``: ``GetRequestStatus``, then the service's outcome applied
  here); if that fails too, the error is answered and the next decision on the request does
  it — the service then refuses that decision (already decided), and instead of a 409 for
  ever, the service's outcome is recorded here before the refusal is answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from api import problems
from grpc_clients.registry import deadline_budget
from observability.metrics import background_row_failed
from oversight.choices import Decision, RequestStatus
from oversight.models import ApprovalRequest
from oversight.selectors import approval_get
from oversight.services import (
    ALREADY_CLOSED,
    CLOSED,
    EXPIRED_REASON,
    UNREACHABLE,
    ClosedOnService,
    approval_close,
    approval_decision_check,
    approval_decision_record,
    approval_decision_recorded,
    approval_decision_send,
    approval_follow_record,
    approval_publish,
    approval_service_outcome,
    oversight_request_close,
)
from realtime.services import AgentEvents, agent_events
from trades.choices import TradeStatus
from trades.services.execution import execute_approved, release
from trades.services.locks import Locked, lock_rows

logger = logging.getLogger("trading_demo.oversight")

# The status an order ends with when its request closes without an approval.
_TRADE_STATUS = {
    RequestStatus.REJECTED: TradeStatus.REJECTED,
    RequestStatus.EXPIRED: TradeStatus.EXPIRED,
    RequestStatus.CANCELLED: TradeStatus.CANCELLED,
}


def _lock_request(approval_request_id) -> Locked:
    """``lock_rows`` for an approval request: its agent, the order's position, the order and
    the request itself."""
    agent_id, trade_id, symbol = ApprovalRequest.objects.values_list(
        "agent_id", "trade_id", "trade__symbol"
    ).get(pk=approval_request_id)
    return lock_rows(agent_id=agent_id, symbols=(symbol,), trade_id=trade_id, approval=True)


def approval_decide(
    *, approval_request_id, actor, decision: str, reason: str = ""
) -> ApprovalRequest:
    """Approve or reject a pending request as an operator; returns it with its decisions.

    The rules of ``oversight.services.approval_decision_check`` first (404, 403, self-approval,
    a rejection without a reason, 409). The oversight service is called next
    (``ServiceUnavailable`` propagates, nothing changed). Then, under the locks and after
    re-checking the request is still pending, the decision is recorded; the last approval of
    the quorum executes the trade, a rejection releases it as ``rejected``; a completed
    request publishes ``approval.completed``. An approval short of the quorum leaves the
    request pending.

    The service's acceptance is never lost here (see the module docstring): an execution
    that fails leaves the request approved and the trade rejected; a decision that cannot be
    written is replaced by the service's outcome (``approval_follow_service``), and this
    decision answers as recorded once it is; a decision the service refuses because it has
    closed the request brings the mirror in line with it before answering 409.
    """
    approval, reason = approval_decision_check(
        approval_request_id=approval_request_id, actor=actor, decision=decision, reason=reason
    )

    def recorded() -> bool:
        return approval_decision_recorded(approval=approval, actor=actor, decision=decision)

    # One deadline for the decision's gRPC calls together (a resubmission, then the decision).
    with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
        try:
            try:
                approval_decision_send(
                    approval=approval, actor=actor, decision=decision, reason=reason
                )
            except ClosedOnService:
                _follow_logged(approval.pk)
                raise
        except problems.Conflict:
            # Following the service may have recorded this very decision (its earlier local
            # step failed): then it is this request's answer, not a conflict.
            if recorded():
                return approval_get(approval_request_id=approval.pk)
            raise

    try:
        _record_decision(approval=approval, actor=actor, decision=decision, reason=reason)
    except problems.Conflict:
        # A racing cancellation or decision, refused by the service, followed it here and
        # recorded this decision first.
        if recorded():
            return approval_get(approval_request_id=approval.pk)
        raise
    except Exception:
        # The service has the decision; the mirror must follow it.
        logger.exception(
            "could not record the %s of %s; following the service", decision, approval.pk
        )
        with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
            _follow_logged(approval.pk)
        if recorded():
            return approval_get(approval_request_id=approval.pk)
        raise
    wanted = Decision.APPROVED if decision == "approve" else Decision.REJECTED
    logger.info("%s %s approval request %s", actor.get_username(), wanted, approval.pk)
    return approval_get(approval_request_id=approval.pk)


def _follow_logged(approval_request_id) -> None:
    try:
        approval_follow_service(approval_request_id=approval_request_id)
    except Exception:
        logger.exception("could not follow the oversight service for %s", approval_request_id)


def _record_decision(*, approval: ApprovalRequest, actor, decision: str, reason: str) -> None:
    """Record a decision the service accepted, under the locks, and settle the order when
    the request has its outcome."""
    now = timezone.now()
    with transaction.atomic():
        rows = _lock_request(approval.pk)
        outcome = approval_decision_record(
            approval=rows.approval, actor=actor, decision=decision, reason=reason
        )
        with agent_events(rows.agent) as events:
            if outcome == RequestStatus.REJECTED:
                _settle(rows, events, outcome, now, f"rejected by operator: {reason}")
            elif outcome == RequestStatus.APPROVED:
                _settle(rows, events, outcome, now, "")


def _settle(rows: Locked, events: AgentEvents, status: str, now: datetime, reason: str) -> None:
    """Close the locked pending request with ``status`` and end or execute its order.

    An approved order is executed in a savepoint, with its live events: if the execution
    fails, only it and its events are rolled back, and the order ends ``rejected``
    (reservation released, read again from the database) while the request stays approved,
    as the service recorded it.
    """
    approval = rows.approval
    approval_close(approval, status=status, now=now)
    if status == RequestStatus.APPROVED:
        try:
            with transaction.atomic(), agent_events(rows.agent) as executed:
                execute_approved(rows, executed)
        except problems.Conflict:
            raise
        except Exception:
            logger.exception("approved request %s: its trade could not be executed", approval.pk)
            fresh = lock_rows(
                agent_id=rows.agent.pk, symbols=(rows.trade.symbol,), trade_id=rows.trade.pk
            )
            release(
                fresh,
                events,
                status=TradeStatus.REJECTED,
                reason="Approved, but the order could not be executed; nothing was traded.",
            )
    else:
        release(
            rows,
            events,
            status=_TRADE_STATUS[status],
            reason=reason or f"approval request {status}",
        )
    approval_publish(approval, "approval.completed", events)


def approval_follow_service(*, approval_request_id) -> ApprovalRequest:
    """Bring a pending local request in line with the oversight service's final outcome.

    Asks ``GetRequestStatus``; if the service has closed the request (approved, rejected,
    expired, cancelled) while it is pending here, applies that outcome under the locks: the
    service's deciding operator's decision is recorded when that operator is a user here, the
    order is executed, rejected, expired or cancelled accordingly (see ``_settle``). A request
    still undecided on the service, or already closed here, is left as it is. Returns the
    request. ``grpc_clients.errors.GrpcClientError`` propagates.
    """
    outcome = approval_service_outcome(approval_request_id=approval_request_id)
    if outcome is None:
        return approval_get(approval_request_id=approval_request_id)
    now = timezone.now()
    with transaction.atomic():
        rows = _lock_request(approval_request_id)
        if rows.approval.status != RequestStatus.PENDING:
            return rows.approval
        reason = approval_follow_record(approval=rows.approval, outcome=outcome)
        with agent_events(rows.agent) as events:
            _settle(rows, events, outcome.status, now, reason)
        logger.warning(
            "approval request %s follows the oversight service: %s",
            approval_request_id,
            outcome.status,
        )
    return approval_get(approval_request_id=approval_request_id)


@dataclass(frozen=True)
class ExpiryReport:
    expired: int
    failed: int


def approvals_expire_report(*, now: datetime | None = None) -> ExpiryReport:
    """Expire every pending request past ``expires_at``; one transaction per request.

    Each is first closed on the oversight service (``oversight_request_close``, before any
    lock, reason ``EXPIRED_REASON``), so an approval racing the expiry has one outcome on both
    sides: if the service had already closed it (an approval that got there first, or its own
    expiry), the server follows the service (``approval_follow_service``); an approval the
    service refused because the expiry got there first follows it too, and records the
    expiry; an unreachable service does not hold
    expiry up (the service expires its copy by itself, same timeout). Then, under the locks
    and re-checked, status ``expired`` with ``resolved_at``, the order released as
    ``expired`` (its reservation freed) and ``approval.completed`` published. A request
    decided meanwhile is skipped; one that fails is logged and counted in ``failed`` without
    stopping the others.
    """
    now = now or timezone.now()
    due = list(
        ApprovalRequest.objects.filter(
            status=RequestStatus.PENDING, expires_at__lte=now
        ).values_list("pk", flat=True)
    )
    expired = failed = 0
    reachable = True
    for request_id in due:
        try:
            with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
                closed = UNREACHABLE
                if reachable:  # one wait for an unreachable service per run, not one each
                    closed = oversight_request_close(request_id, reason=EXPIRED_REASON)
                    reachable = closed != UNREACHABLE
                if closed == ALREADY_CLOSED:
                    followed = approval_follow_service(approval_request_id=request_id)
                    if followed.status != RequestStatus.PENDING:
                        expired += followed.status == RequestStatus.EXPIRED
                        continue
            with transaction.atomic():
                rows = _lock_request(request_id)
                if rows.approval.status != RequestStatus.PENDING or rows.approval.expires_at > now:
                    # A decision the service refused because this run closed the request
                    # there followed the service here first: still this run's expiry.
                    expired += closed == CLOSED and rows.approval.status == RequestStatus.EXPIRED
                    continue
                approval_close(rows.approval, status=RequestStatus.EXPIRED, now=now)
                with agent_events(rows.agent) as events:
                    release(rows, events, status=TradeStatus.EXPIRED, reason=EXPIRED_REASON)
                    approval_publish(rows.approval, "approval.completed", events)
            expired += 1
        except Exception:
            failed += 1
            background_row_failed("approval-expiry", request_id)
    return ExpiryReport(expired=expired, failed=failed)


def approvals_expire_due(now: datetime | None = None) -> int:
    """Expire the due approval requests (see ``approvals_expire_report``); returns how many."""
    return approvals_expire_report(now=now).expired
