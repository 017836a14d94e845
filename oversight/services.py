"""Oversight: asking the oversight service, mirroring its requests, recording decisions.

The oversight service (gRPC) owns the approval policy and the record of decisions; this app
keeps a mirror (``ApprovalRequest``, keyed by the service's request id) tied to the trade that
waits. It knows nothing of orders' money: the order workflow (``trades.services.approvals``)
locks the rows, asks this module to check, send and record a decision, and then executes or
releases the order with the outcome this module returns.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from agents.permissions import is_operator
from api import problems
from api.representation import quantity_text
from grpc_clients.errors import GrpcClientError, RemoteConflict, RemoteNotFound
from grpc_clients.registry import get_oversight_client
from metering.services import usage_record
from oversight.choices import Decision, RequestStatus
from oversight.models import ApprovalDecision, ApprovalRequest
from oversight.representation import ApprovalRequestSerializer
from oversight.risk import Risk, assess_trade_risk, review_priority
from oversight.selectors import approval_get, approval_get_for
from realtime.services import AgentEvents

if TYPE_CHECKING:
    from agents.models import Agent
    from trades.models import Trade

logger = logging.getLogger("trading_demo.oversight")

QUORUM_THRESHOLD = Decimal("100000")
# The actor named on the oversight service for what the server does by itself.
SYSTEM_ACTOR = "system"
# The reason of a RejectRequest that stands for a cancellation (no CancelRequest extension).
CANCELLED_PREFIX = "cancelled: "
# The reason the server closes a request on the service with when it expired here: whoever
# follows the service (a decision the service refused because the expiry got there first)
# then records an expiry, as the expiry job does, not a cancellation.
EXPIRED_REASON = "approval request expired"
# The service's priority scale tops out at "critical"; ours calls it "urgent".
_GRPC_PRIORITY = {"low": "low", "medium": "medium", "high": "high", "urgent": "critical"}


@dataclass(frozen=True)
class Evaluation:
    """The oversight service's decision on an order, with our risk assessment of it."""

    request_id: uuid.UUID
    auto_approved: bool
    approvals_required: int
    policy_id: str
    risk: Risk
    priority: str
    reason: str


def approval_ttl() -> timedelta:
    return timedelta(seconds=int(settings.OVERSIGHT_APPROVAL_TTL))


def _policy_reason(*, notional: Decimal, config: dict, budget: Decimal) -> str:
    """Why the default policy (SPEC §5 rule 5) asks for a human, in words an operator reads."""
    reasons = []
    limit = Decimal(str(config["auto_approval_limit"]))
    fraction = Decimal(str(config["approval_budget_fraction"]))
    if notional >= limit:
        reasons.append(f"notional {notional} ≥ auto_approval_limit {limit}")
    if notional >= fraction * budget:
        reasons.append(f"notional {notional} ≥ {fraction} of budget {budget}")
    if notional >= QUORUM_THRESHOLD:
        reasons.append(f"two approvers needed at ≥ {QUORUM_THRESHOLD}")
    return "; ".join(reasons) or "approval required by policy"


def _reference_price(trade: Trade, notional: Decimal) -> Decimal:
    if trade.limit_price is not None:
        return Decimal(trade.limit_price)
    if trade.quantity:
        return (Decimal(notional) / Decimal(trade.quantity)).quantize(Decimal("0.0001"))
    return Decimal("0")


def _submit_to_oversight(
    *,
    request_id: uuid.UUID,
    agent: Agent,
    trade: Trade,
    notional: Decimal,
    risk_level: str,
    risk_score: int,
    priority: str,
    timeout: timedelta,
):
    """SubmitRequest for an order; idempotent on the service by ``request_id``."""
    config = agent.effective_config
    return get_oversight_client().submit_request(
        request_id=str(request_id),
        agent_id=str(agent.pk),
        agent_name=agent.name,
        tenant_id=str(agent.owner_id),
        subject=f"{trade.side} {quantity_text(trade.quantity)} {trade.symbol}",
        description=(
            f"{agent.name} wants to {trade.side} {quantity_text(trade.quantity)} {trade.symbol} "
            f"({trade.type}) for about {notional}"
        ),
        parameters={
            "notional": str(notional),
            "budget": str(agent.budget),
            "auto_approval_limit": str(config["auto_approval_limit"]),
            "approval_budget_fraction": str(config["approval_budget_fraction"]),
            "symbol": trade.symbol,
            "side": trade.side,
            "quantity": str(trade.quantity),
            "price": str(_reference_price(trade, notional)),
            "order_type": str(trade.type),
        },
        risk_level=risk_level,
        priority=_GRPC_PRIORITY[priority],
        timeout=timeout,
        tags=("trade", trade.symbol),
        metadata={"trade_id": str(trade.pk), "risk_score": str(risk_score)},
    )


def approval_evaluate(
    *, agent: Agent, trade: Trade, notional: Decimal, held_value: Decimal | None = None
) -> Evaluation:
    """Submit the order to the oversight service and return its decision with a risk score.

    ``trade`` may be unsaved; it needs symbol, side, quantity and prices. The request id is
    chosen here (a new UUID) and becomes the ``ApprovalRequest`` id if a human must decide; it
    expires after ``OVERSIGHT_APPROVAL_TTL`` on the service as it does locally. Writes nothing
    locally. ``grpc_clients.errors.ServiceUnavailable`` propagates: the order must fail closed.
    ``held_value`` is the cost basis the agent holds in the symbol, read when not given.
    """
    notional = Decimal(notional)
    config = agent.effective_config
    held = held_value
    if held is None:
        held = agent.positions.filter(symbol=trade.symbol).aggregate(v=Sum("cost_basis"))["v"]
    risk = assess_trade_risk(
        agent=agent, trade=trade, notional=notional, held_value=held or Decimal("0")
    )
    expected_quorum = 2 if notional >= QUORUM_THRESHOLD else 1
    priority = review_priority(risk=risk, approvals_required=expected_quorum)
    request_id = uuid.uuid4()
    result = _submit_to_oversight(
        request_id=request_id,
        agent=agent,
        trade=trade,
        notional=notional,
        risk_level=risk.level,
        risk_score=risk.score,
        priority=priority,
        timeout=approval_ttl(),
    )
    if result.state not in {"approved", "pending"}:
        logger.error("oversight answered %s for a new request %s", result.state, request_id)
        raise problems.ServiceUnavailable(
            "The oversight service gave an unexpected answer; nothing was changed.",
            service="oversight",
        )
    auto_approved = result.state == "approved"
    approvals_required = 0 if auto_approved else max(int(result.approvals_required), 1)
    if auto_approved:
        reason = f"auto-approved by {result.policy_id}"
    else:
        reason = _policy_reason(notional=notional, config=config, budget=Decimal(agent.budget))
        priority = review_priority(risk=risk, approvals_required=approvals_required)
    return Evaluation(
        request_id=request_id,
        auto_approved=auto_approved,
        approvals_required=approvals_required,
        policy_id=result.policy_id,
        risk=risk,
        priority=priority,
        reason=reason,
    )


def approval_publish(approval: ApprovalRequest, event: str, events: AgentEvents) -> None:
    """Publish ``event`` with the request's JSON on its agent's ``oversight`` channel, through
    ``events``, the publisher of the caller's transaction."""
    fresh = approval_get(approval_request_id=approval.pk)
    events.publish(event=event, channel="oversight", data=ApprovalRequestSerializer(fresh).data)


def approval_request_open(
    *, trade: Trade, agent: Agent, evaluation: Evaluation, events: AgentEvents
) -> ApprovalRequest:
    """Mirror a pending oversight request for a saved trade, in the caller's transaction.

    Writes the ``ApprovalRequest`` (id = the service's request id, ``expires_at`` = now + TTL),
    one ``oversight_requests`` usage event, and publishes ``approval.requested`` on the agent's
    ``oversight`` channel (sent after commit).
    """
    now = timezone.now()
    approval = ApprovalRequest(
        id=evaluation.request_id,
        trade=trade,
        agent=agent,
        amount=Decimal(trade.notional).quantize(Decimal("0.01")),
        status=RequestStatus.PENDING,
        priority=evaluation.priority,
        reason=evaluation.reason,
        risk_score=evaluation.risk.score,
        risk_level=evaluation.risk.level,
        risk_factors=evaluation.risk.factors,
        approvals_required=max(evaluation.approvals_required, 1),
        policy_id=evaluation.policy_id,
        expires_at=now + approval_ttl(),
    )
    approval.full_clean(exclude=["trade", "agent"], validate_unique=False)
    with transaction.atomic():
        approval.save(force_insert=True)
        usage_record(
            agent=agent,
            code="oversight_requests",
            quantity=1,
            event_type="oversight_request",
            symbol=trade.symbol,
            properties={"approval_request_id": str(approval.pk), "trade_id": str(trade.pk)},
        )
        approval_publish(approval, "approval.requested", events)
    return approval


def _ensure_open_for(approval: ApprovalRequest, actor) -> None:
    if approval.status != RequestStatus.PENDING:
        raise problems.Conflict(f"The approval request is {approval.status}, not pending.")
    if any(decision.approver_id == actor.pk for decision in approval.decisions.all()):
        raise problems.Conflict("You have already decided this approval request.")


class ClosedOnService(problems.Conflict):
    """The oversight service refused a decision because it has closed the request, which is
    still pending here: the caller brings the mirror in line before answering the 409."""


def _resubmit(approval: ApprovalRequest) -> None:
    """Submit a pending request again under its own id, for its remaining lifetime.

    The oversight service may have lost it (the reference service keeps its state in memory
    and restarts with the server); the same id keeps the mirror and the service in step.
    """
    remaining = approval.expires_at - timezone.now()
    result = _submit_to_oversight(
        request_id=approval.pk,
        agent=approval.agent,
        trade=approval.trade,
        notional=approval.amount,
        risk_level=approval.risk_level,
        risk_score=approval.risk_score,
        priority=approval.priority,
        timeout=max(remaining, timedelta(seconds=1)),
    )
    logger.warning("resubmitted approval request %s to oversight (%s)", approval.pk, result.state)


def approval_decision_send(
    *, approval: ApprovalRequest, actor, decision: str, reason: str, resubmitted: bool = False
) -> None:
    """Tell the oversight service a decision, before anything changes here; its refusal or
    absence changes nothing here. ``ClosedOnService`` (a 409) when the service had closed
    the request already."""
    client = get_oversight_client()
    try:
        if decision == "approve":
            client.approve(
                request_id=str(approval.pk),
                approver_id=str(actor.pk),
                approver_name=actor.get_username(),
                justification=reason,
            )
        else:
            client.reject(
                request_id=str(approval.pk),
                rejector_id=str(actor.pk),
                rejector_name=actor.get_username(),
                reason=reason,
            )
    except RemoteConflict as exc:
        if decision == "approve" and exc.code == "ALREADY_EXISTS":
            # The service has this operator's approval but we have no record of it (a previous
            # attempt failed after the call): record it now instead of refusing forever.
            logger.warning("recovering approval of %s by %s", approval.pk, actor.pk)
            return
        if exc.code == "FAILED_PRECONDITION":
            # Closed on the service but pending here (a decision whose local step failed, or
            # the service's own expiry): the caller follows the service before answering.
            raise ClosedOnService(
                f"The oversight service refused the decision: {exc.detail or exc.code}."
            ) from exc
        raise problems.Conflict(
            f"The oversight service refused the decision: {exc.detail or exc.code}."
        ) from exc
    except RemoteNotFound as exc:
        if resubmitted:
            raise problems.Conflict("The oversight service does not know this request.") from exc
        _resubmit(approval)
        approval_decision_send(
            approval=approval, actor=actor, decision=decision, reason=reason, resubmitted=True
        )


def approval_decision_check(
    *, approval_request_id, actor, decision: str, reason: str = ""
) -> tuple[ApprovalRequest, str]:
    """The rules of an operator's decision, in order, before anything is asked or changed: a
    request the actor cannot see → ``NotFound``; not an operator → ``Forbidden``; the
    agent's own owner → ``SelfApproval``; a rejection without a reason → ``ValidationFailed``;
    not pending or already decided by this operator → ``Conflict``. Returns the request and
    the reason, trimmed."""
    if decision not in {"approve", "reject"}:
        raise ValueError(f"decision must be 'approve' or 'reject', not {decision!r}")
    approval = approval_get_for(user=actor, approval_request_id=approval_request_id)
    if not is_operator(actor):
        raise problems.Forbidden("Only operators may approve or reject requests.")
    if approval.agent.owner_id == actor.pk:
        raise problems.SelfApproval()
    reason = (reason or "").strip()
    if decision == "reject" and not reason:
        raise problems.ValidationFailed(
            "A rejection needs a reason.", errors={"reason": ["A rejection needs a reason."]}
        )
    _ensure_open_for(approval, actor)
    return approval, reason


def approval_decision_recorded(*, approval: ApprovalRequest, actor, decision: str) -> bool:
    """Whether ``actor``'s ``decision`` on the request is recorded here."""
    wanted = Decision.APPROVED if decision == "approve" else Decision.REJECTED
    return ApprovalDecision.objects.filter(
        request_id=approval.pk, approver=actor, decision=wanted
    ).exists()


def approval_decision_record(
    *, approval: ApprovalRequest, actor, decision: str, reason: str
) -> str | None:
    """Record a decision the service accepted on ``approval``, a request the caller locked
    (``trades.services.locks.lock_rows``), re-checking that it is still pending and not yet
    decided by ``actor`` (``Conflict`` otherwise). Returns the request's outcome once it has
    one — ``rejected``, or ``approved`` on the last approval of the quorum — else None."""
    try:
        _ensure_open_for(approval, actor)
    except problems.Conflict:
        # Another outcome won locally after the service accepted this decision: the local
        # outcome stands; the service's copy now disagrees, which is worth a trace.
        logger.warning(
            "%s of %s accepted by oversight but lost locally to %s",
            decision,
            approval.pk,
            approval.status,
        )
        raise
    record = ApprovalDecision(
        request=approval,
        approver=actor,
        decision=Decision.APPROVED if decision == "approve" else Decision.REJECTED,
        reason=reason,
    )
    record.full_clean(exclude=["request", "approver"], validate_unique=False)
    record.save(force_insert=True)
    if decision == "reject":
        return RequestStatus.REJECTED
    approvals = approval.decisions.filter(decision=Decision.APPROVED).count()
    return RequestStatus.APPROVED if approvals >= approval.approvals_required else None


def approval_close(approval: ApprovalRequest, *, status: str, now: datetime) -> None:
    """Close a pending request the caller locked with its outcome."""
    approval.status = status
    approval.resolved_at = now
    approval.save(update_fields=["status", "resolved_at"])


_SERVICE_OUTCOME = {
    "approved": RequestStatus.APPROVED,
    "rejected": RequestStatus.REJECTED,
    "expired": RequestStatus.EXPIRED,
    "cancelled": RequestStatus.CANCELLED,
}


@dataclass(frozen=True)
class ServiceOutcome:
    """How the oversight service closed a request: its status here, the deciding operator
    (when a user here) and the decision's justification."""

    status: str
    approver: object | None
    justification: str


def approval_service_outcome(*, approval_request_id) -> ServiceOutcome | None:
    """Ask the oversight service (``GetRequestStatus``, with its audit trail) how it closed a
    request; None while it is undecided there. A request this server closed there because it
    expired here (reason ``EXPIRED_REASON``) is ``expired``; one it closed for a cancellation
    is ``cancelled``. ``grpc_clients.errors.GrpcClientError`` propagates."""
    status = get_oversight_client().get_request_status(
        str(approval_request_id), include_audit_trail=True
    )
    outcome = _SERVICE_OUTCOME.get(status.state)
    if outcome is None:
        return None
    decided = status.decision
    justification = decided.justification if decided is not None else ""
    closed_for = ""
    if outcome == RequestStatus.REJECTED and justification.startswith(CANCELLED_PREFIX):
        # How this server closes a request on a service without CancelRequest.
        outcome = RequestStatus.CANCELLED
        closed_for = justification.removeprefix(CANCELLED_PREFIX)
    elif outcome == RequestStatus.CANCELLED:
        closed_for = next(
            (t.reason for t in reversed(status.transitions) if t.to_state == status.state), ""
        )
    if outcome == RequestStatus.CANCELLED and closed_for == EXPIRED_REASON:
        return ServiceOutcome(
            status=RequestStatus.EXPIRED, approver=None, justification=EXPIRED_REASON
        )
    approver = None
    if decided is not None and decided.approver_id.isdigit():
        approver = get_user_model().objects.filter(pk=int(decided.approver_id)).first()
    return ServiceOutcome(status=outcome, approver=approver, justification=justification)


def approval_follow_record(*, approval: ApprovalRequest, outcome: ServiceOutcome) -> str:
    """Record here the service's deciding operator's decision on a pending request the
    caller locked, when that operator is a user here and has no decision recorded yet.
    Returns the reason the order ends with."""
    reason = outcome.justification
    if (
        outcome.approver is not None
        and outcome.status in (RequestStatus.APPROVED, RequestStatus.REJECTED)
        and not any(d.approver_id == outcome.approver.pk for d in approval.decisions.all())
    ):
        ApprovalDecision.objects.create(
            request=approval,
            approver=outcome.approver,
            decision=(
                Decision.APPROVED if outcome.status == RequestStatus.APPROVED else Decision.REJECTED
            ),
            reason=reason,
        )
    if outcome.status == RequestStatus.REJECTED:
        reason = f"rejected by operator: {reason}"
    return reason


def approval_request_cancel(
    *,
    approval_request: ApprovalRequest,
    events: AgentEvents,
    actor=None,
    reason: str = "",
    closed_remotely=False,
) -> ApprovalRequest:
    """Cancel a pending request the caller locked, inside the caller's transaction.

    Raises ``Conflict`` if the request is no longer pending. Publishes ``approval.completed``;
    after commit, closes the request on the oversight service (``oversight_request_close``)
    unless ``closed_remotely`` says it was closed there already (``approval_request_withdraw``).
    """
    if approval_request.status != RequestStatus.PENDING:
        raise problems.Conflict(f"The approval request is {approval_request.status}, not pending.")
    approval_close(approval_request, status=RequestStatus.CANCELLED, now=timezone.now())
    approval_publish(approval_request, "approval.completed", events)
    actor_id = str(actor.pk) if actor is not None else SYSTEM_ACTOR
    actor_name = actor.get_username() if actor is not None else SYSTEM_ACTOR
    if not closed_remotely:
        request_id = approval_request.pk
        transaction.on_commit(
            lambda: _close_after_cancel(
                request_id, actor_id=actor_id, actor_name=actor_name, reason=reason
            )
        )
    return approval_request


CLOSED = "closed"
ALREADY_CLOSED = "already_closed"
UNREACHABLE = "unreachable"


def oversight_request_close(
    request_id,
    *,
    actor_id: str = SYSTEM_ACTOR,
    actor_name: str = SYSTEM_ACTOR,
    reason: str,
) -> str:
    """Close, on the oversight service, a pending request the server drops.

    ``CancelRequest`` is this project's extension of the Creto API; a service built from
    Creto's proto answers it UNIMPLEMENTED. The request is then closed with ``RejectRequest``,
    which every ``creto.oversight.v1`` service implements, its reason naming the cancellation
    ("cancelled: …"), so no request the server dropped stays pending on the service. Returns
    ``CLOSED``; ``ALREADY_CLOSED`` when the service had closed it already (decided, expired)
    or does not know it; ``UNREACHABLE`` when the service could not be used (logged; its own
    expiry, the same TTL, closes the request then).
    """
    client = get_oversight_client()
    try:
        client.cancel(request_id=str(request_id), actor_id=actor_id, reason=reason)
        return CLOSED
    except (RemoteConflict, RemoteNotFound):
        return ALREADY_CLOSED
    except GrpcClientError as exc:
        if exc.code != "UNIMPLEMENTED":
            logger.warning("could not cancel oversight request %s remotely: %s", request_id, exc)
            return UNREACHABLE
    try:
        client.reject(
            request_id=str(request_id),
            rejector_id=actor_id,
            rejector_name=actor_name,
            reason=f"{CANCELLED_PREFIX}{reason}",
            category=None,
        )
        return CLOSED
    except (RemoteConflict, RemoteNotFound):
        return ALREADY_CLOSED
    except GrpcClientError as exc:
        logger.warning("could not close oversight request %s remotely: %s", request_id, exc)
        return UNREACHABLE


def _close_after_cancel(request_id, *, actor_id: str, actor_name: str, reason: str) -> None:
    """After a cancellation that did not ask the service first (the kill switch, which must
    work whatever the service says): close the request there, and leave a trace when the
    service had decided it meanwhile, the one case where the two records then differ."""
    outcome = oversight_request_close(
        request_id, actor_id=actor_id, actor_name=actor_name, reason=reason or "cancelled"
    )
    if outcome == ALREADY_CLOSED:
        logger.warning(
            "approval request %s was cancelled here but had already been closed on the "
            "oversight service",
            request_id,
        )


@dataclass(frozen=True)
class Withdrawal:
    """What the oversight service answered when asked to close a held order's request."""

    request_id: uuid.UUID
    outcome: str


def approval_request_withdraw(*, trade: Trade, actor=None, reason: str) -> Withdrawal | None:
    """Before a held order is cancelled, close its request on the oversight service first.

    The service then arbitrates between the cancellation and a decision racing it, as it does
    between two decisions: whichever it records first is the outcome on both sides. Returns
    None when the order has no pending request, else the request and what
    ``oversight_request_close`` answered: ``CLOSED`` (the local cancellation need not tell
    the service again), ``ALREADY_CLOSED`` (an operator decided first: the caller follows
    the service) or ``UNREACHABLE`` (the cancellation goes on locally; the service is told
    after commit).
    Makes gRPC calls: call it before taking any lock.
    """
    approval = (
        ApprovalRequest.objects.filter(trade_id=trade.pk, status=RequestStatus.PENDING)
        .only("pk")
        .first()
    )
    if approval is None:
        return None
    outcome = oversight_request_close(
        approval.pk,
        actor_id=str(actor.pk) if actor is not None else SYSTEM_ACTOR,
        actor_name=actor.get_username() if actor is not None else SYSTEM_ACTOR,
        reason=reason,
    )
    return Withdrawal(request_id=approval.pk, outcome=outcome)
