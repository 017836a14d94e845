"""Oversight writes: asking the oversight service, mirroring its requests, deciding, expiring.

The oversight service (gRPC) owns the approval policy and the record of decisions; this app
keeps a mirror (``ApprovalRequest``, keyed by the service's request id) tied to the trade that
waits, and moves money only through ``trades.services``. A decision goes to the service first:
if it cannot be reached the API answers 503 and nothing changes here. Local changes then run
under row locks in the project's order (agent → trade → approval request), and every writer
re-checks that the request is still pending once it holds the lock, so concurrent approvals,
rejections, cancellations and expiry produce exactly one outcome.

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
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from api import problems
from api.representation import quantity_text
from grpc_clients.errors import GrpcClientError, RemoteConflict, RemoteNotFound
from grpc_clients.registry import deadline_budget, get_oversight_client
from observability.metrics import background_row_failed
from oversight.choices import Decision, RequestStatus
from oversight.models import ApprovalDecision, ApprovalRequest
from oversight.risk import Risk, assess_trade_risk, review_priority
from oversight.selectors import approval_get, approval_get_for

if TYPE_CHECKING:
    from agents.models import Agent
    from trades.models import Trade

logger = logging.getLogger("trading_demo.oversight")

QUORUM_THRESHOLD = Decimal("100000")
# The actor named on the oversight service for what the server does by itself.
SYSTEM_ACTOR = "system"
# The reason of a RejectRequest that stands for a cancellation (no CancelRequest extension).
CANCELLED_PREFIX = "cancelled: "
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


def _publish(approval: ApprovalRequest, event: str) -> None:
    from oversight.representation import ApprovalRequestSerializer
    from realtime.services import publish_agent_event

    fresh = approval_get(approval_request_id=approval.pk)
    publish_agent_event(
        agent_id=fresh.agent_id,
        event=event,
        channel="oversight",
        data=ApprovalRequestSerializer(fresh).data,
    )


def approval_request_open(*, trade: Trade, agent: Agent, evaluation: Evaluation) -> ApprovalRequest:
    """Mirror a pending oversight request for a saved trade, in the caller's transaction.

    Writes the ``ApprovalRequest`` (id = the service's request id, ``expires_at`` = now + TTL),
    one ``oversight_requests`` usage event, and publishes ``approval.requested`` on the agent's
    ``oversight`` channel (sent after commit).
    """
    from metering.services import usage_record

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
        _publish(approval, "approval.requested")
    return approval


def _ensure_open_for(approval: ApprovalRequest, actor) -> None:
    if approval.status != RequestStatus.PENDING:
        raise problems.Conflict(f"The approval request is {approval.status}, not pending.")
    if any(decision.approver_id == actor.pk for decision in approval.decisions.all()):
        raise problems.Conflict("You have already decided this approval request.")


def _lock_for_change(approval_request_id) -> tuple[Trade, ApprovalRequest]:
    """Lock agent → trade → approval request (the project's lock order) and return the rows."""
    from agents.models import Agent
    from trades.models import Trade

    agent_id, trade_id = ApprovalRequest.objects.values_list("agent_id", "trade_id").get(
        pk=approval_request_id
    )
    Agent.objects.select_for_update().only("pk").get(pk=agent_id)
    trade = Trade.objects.select_for_update().get(pk=trade_id)
    approval = (
        ApprovalRequest.objects.select_for_update()
        .prefetch_related("decisions")
        .get(pk=approval_request_id)
    )
    return trade, approval


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


def _send_decision(
    *, approval: ApprovalRequest, actor, decision: str, reason: str, resubmitted: bool = False
) -> None:
    """Tell the oversight service first; its refusal or absence changes nothing here."""
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
            # the service's own expiry): follow the service before answering the refusal.
            try:
                approval_follow_service(approval_request_id=approval.pk)
            except Exception:
                logger.exception("could not follow the oversight service for %s", approval.pk)
        raise problems.Conflict(
            f"The oversight service refused the decision: {exc.detail or exc.code}."
        ) from exc
    except RemoteNotFound as exc:
        if resubmitted:
            raise problems.Conflict("The oversight service does not know this request.") from exc
        _resubmit(approval)
        _send_decision(
            approval=approval, actor=actor, decision=decision, reason=reason, resubmitted=True
        )


def approval_decide(
    *, approval_request_id, actor, decision: str, reason: str = ""
) -> ApprovalRequest:
    """Approve or reject a pending request as an operator; returns it with its decisions.

    Rules, in order: a request the actor cannot see → ``NotFound``; not an operator →
    ``Forbidden``; the agent's own owner → ``SelfApproval``; a rejection without a reason →
    ``ValidationFailed``; not pending or already decided by this operator → ``Conflict``.
    The oversight service is called first (``ServiceUnavailable`` propagates, nothing changed).
    Then, under locks (agent → trade → request) and after re-checking the request is still
    pending, the decision is recorded; the last approval of the quorum executes the trade via
    ``trades.services.trade_execute_approved``, a rejection releases it via
    ``trades.services.trade_release(status="rejected")``; a completed request publishes
    ``approval.completed``. An approval short of the quorum leaves the request pending.

    The service's acceptance is never lost here (see the module docstring): an execution
    that fails leaves the request approved and the trade rejected; a decision that cannot be
    written is replaced by the service's outcome (``approval_follow_service``), and this
    decision answers as recorded once it is; a decision the service refuses because it has
    closed the request brings the mirror in line with it before answering 409.
    """
    from agents.permissions import is_operator

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
    # One deadline for the decision's gRPC calls together (a resubmission, then the decision).
    wanted = Decision.APPROVED if decision == "approve" else Decision.REJECTED
    recorded = ApprovalDecision.objects.filter(
        request_id=approval.pk, approver=actor, decision=wanted
    )
    with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
        try:
            _send_decision(approval=approval, actor=actor, decision=decision, reason=reason)
        except problems.Conflict:
            # Following the service may have recorded this very decision (its earlier local
            # step failed): then it is this request's answer, not a conflict.
            if recorded.exists():
                return approval_get(approval_request_id=approval.pk)
            raise

    try:
        _record_decision(approval=approval, actor=actor, decision=decision, reason=reason)
    except problems.Conflict:
        # A racing cancellation or decision, refused by the service, followed it here and
        # recorded this decision first.
        if recorded.exists():
            return approval_get(approval_request_id=approval.pk)
        raise
    except Exception:
        # The service has the decision; the mirror must follow it.
        logger.exception(
            "could not record the %s of %s; following the service", decision, approval.pk
        )
        try:
            with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
                approval_follow_service(approval_request_id=approval.pk)
        except Exception:
            logger.exception("could not follow the oversight service for %s", approval.pk)
        if recorded.exists():
            return approval_get(approval_request_id=approval.pk)
        raise
    logger.info("%s %s approval request %s", actor.get_username(), wanted, approval.pk)
    return approval_get(approval_request_id=approval.pk)


def _record_decision(*, approval: ApprovalRequest, actor, decision: str, reason: str) -> None:
    """Record a decision the service accepted, under locks (agent → trade → request)."""
    now = timezone.now()
    with transaction.atomic():
        trade, locked = _lock_for_change(approval.pk)
        try:
            _ensure_open_for(locked, actor)
        except problems.Conflict:
            # Another outcome won locally after the service accepted this decision: the local
            # outcome stands; the service's copy now disagrees, which is worth a trace.
            logger.warning(
                "%s of %s accepted by oversight but lost locally to %s",
                decision,
                approval.pk,
                locked.status,
            )
            raise
        record = ApprovalDecision(
            request=locked,
            approver=actor,
            decision=Decision.APPROVED if decision == "approve" else Decision.REJECTED,
            reason=reason,
        )
        record.full_clean(exclude=["request", "approver"], validate_unique=False)
        record.save(force_insert=True)
        if decision == "reject":
            _settle(locked, trade, RequestStatus.REJECTED, now, f"rejected by operator: {reason}")
        else:
            approvals = locked.decisions.filter(decision=Decision.APPROVED).count()
            if approvals >= locked.approvals_required:
                _settle(locked, trade, RequestStatus.APPROVED, now, "")


def _settle(locked: ApprovalRequest, trade: Trade, status: str, now, reason: str) -> None:
    """Close a locked pending request with ``status`` and end or execute its trade.

    An approved trade is executed in a savepoint: if the execution fails, only it is rolled
    back, and the trade ends ``rejected`` (reservation released) while the request stays
    approved, as the service recorded it.
    """
    from trades import services as trade_services

    locked.status = status
    locked.resolved_at = now
    locked.save(update_fields=["status", "resolved_at"])
    if status == RequestStatus.APPROVED:
        try:
            with transaction.atomic():
                trade_services.trade_execute_approved(trade=trade)
        except problems.Conflict:
            raise
        except Exception:
            logger.exception("approved request %s: its trade could not be executed", locked.pk)
            trade_services.trade_release(
                trade=trade,
                status="rejected",
                reason="Approved, but the order could not be executed; nothing was traded.",
            )
    else:
        trade_services.trade_release(
            trade=trade, status=_TRADE_STATUS[status], reason=reason or f"approval request {status}"
        )
    _publish(locked, "approval.completed")


_TRADE_STATUS = {
    RequestStatus.REJECTED: "rejected",
    RequestStatus.EXPIRED: "expired",
    RequestStatus.CANCELLED: "cancelled",
}
_SERVICE_OUTCOME = {
    "approved": RequestStatus.APPROVED,
    "rejected": RequestStatus.REJECTED,
    "expired": RequestStatus.EXPIRED,
    "cancelled": RequestStatus.CANCELLED,
}


def approval_follow_service(*, approval_request_id) -> ApprovalRequest:
    """Bring a pending local request in line with the oversight service's final outcome.

    Asks ``GetRequestStatus``; if the service has closed the request (approved, rejected,
    expired, cancelled) while it is pending here, applies that outcome under locks: the
    service's deciding operator's decision is recorded when that operator is a user here, the
    trade is executed, rejected, expired or cancelled accordingly (see ``_settle``). A request
    still undecided on the service, or already closed here, is left as it is. Returns the
    request. ``grpc_clients.errors.GrpcClientError`` propagates.
    """
    from django.contrib.auth import get_user_model

    status = get_oversight_client().get_request_status(str(approval_request_id))
    outcome = _SERVICE_OUTCOME.get(status.state)
    if outcome is None:
        return approval_get(approval_request_id=approval_request_id)
    decided = status.decision
    if (
        outcome == RequestStatus.REJECTED
        and decided is not None
        and decided.justification.startswith(CANCELLED_PREFIX)
    ):
        # How this server closes a request on a service without CancelRequest.
        outcome = RequestStatus.CANCELLED
    approver = None
    if decided is not None and decided.approver_id.isdigit():
        approver = get_user_model().objects.filter(pk=int(decided.approver_id)).first()
    now = timezone.now()
    with transaction.atomic():
        trade, locked = _lock_for_change(approval_request_id)
        if locked.status != RequestStatus.PENDING:
            return locked
        reason = decided.justification if decided is not None else ""
        if (
            approver is not None
            and outcome in (RequestStatus.APPROVED, RequestStatus.REJECTED)
            and not any(d.approver_id == approver.pk for d in locked.decisions.all())
        ):
            ApprovalDecision.objects.create(
                request=locked,
                approver=approver,
                decision=(
                    Decision.APPROVED if outcome == RequestStatus.APPROVED else Decision.REJECTED
                ),
                reason=reason,
            )
        if outcome == RequestStatus.REJECTED:
            reason = f"rejected by operator: {reason}"
        _settle(locked, trade, outcome, now, reason)
        logger.warning("approval request %s follows the oversight service: %s", locked.pk, outcome)
    return approval_get(approval_request_id=approval_request_id)


def approval_request_cancel(
    *, approval_request: ApprovalRequest, actor=None, reason: str = "", closed_remotely=False
) -> ApprovalRequest:
    """Cancel a pending request locally, inside the caller's transaction.

    Callers (``trade_cancel``, ``agent_terminate``) hold the agent and trade locks already and
    release the trade's reservation themselves. Raises ``Conflict`` if the request is no longer
    pending. Publishes ``approval.completed``; after commit, closes the request on the
    oversight service (``oversight_request_close``) unless ``closed_remotely`` says it was
    closed there already (``approval_request_withdraw``).
    """
    now = timezone.now()
    with transaction.atomic():
        locked = ApprovalRequest.objects.select_for_update().get(pk=approval_request.pk)
        if locked.status != RequestStatus.PENDING:
            raise problems.Conflict(f"The approval request is {locked.status}, not pending.")
        locked.status = RequestStatus.CANCELLED
        locked.resolved_at = now
        locked.save(update_fields=["status", "resolved_at"])
        _publish(locked, "approval.completed")
        actor_id = str(actor.pk) if actor is not None else SYSTEM_ACTOR
        actor_name = actor.get_username() if actor is not None else SYSTEM_ACTOR
        if not closed_remotely:
            transaction.on_commit(
                lambda: _close_after_cancel(
                    locked.pk, actor_id=actor_id, actor_name=actor_name, reason=reason
                )
            )
    approval_request.status = locked.status
    approval_request.resolved_at = locked.resolved_at
    return locked


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


def approval_request_withdraw(*, trade: Trade, actor=None, reason: str) -> bool:
    """Before a held order is cancelled, close its request on the oversight service first.

    The service then arbitrates between the cancellation and a decision racing it, as it does
    between two decisions: whichever it records first is the outcome on both sides. Returns
    True when the service closed the request for this cancellation (the local cancellation
    need not tell it again). When the service had already closed it (an operator approved or
    rejected it first), the server follows the service (``approval_follow_service``) and the
    cancellation then finds the order no longer pending (409). An unreachable service does not
    block a cancellation: it goes on locally and the service is told after commit. Makes gRPC
    calls: call it before taking any lock.
    """
    approval = (
        ApprovalRequest.objects.filter(trade_id=trade.pk, status=RequestStatus.PENDING)
        .only("pk")
        .first()
    )
    if approval is None:
        return False
    with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
        outcome = oversight_request_close(
            approval.pk,
            actor_id=str(actor.pk) if actor is not None else SYSTEM_ACTOR,
            actor_name=actor.get_username() if actor is not None else SYSTEM_ACTOR,
            reason=reason,
        )
        if outcome == ALREADY_CLOSED:
            try:
                approval_follow_service(approval_request_id=approval.pk)
            except Exception:
                logger.exception("could not follow the oversight service for %s", approval.pk)
    return outcome == CLOSED


@dataclass(frozen=True)
class ExpiryReport:
    expired: int
    failed: int


def approvals_expire_report(*, now: datetime | None = None) -> ExpiryReport:
    """Expire every pending request past ``expires_at``; one transaction per request.

    Each is first closed on the oversight service (``oversight_request_close``, before any
    lock), so an approval racing the expiry has one outcome on both sides: if the service had
    already closed it (an approval that got there first, or its own expiry), the server
    follows the service (``approval_follow_service``); an unreachable service does not hold
    expiry up (the service expires its copy by itself, same timeout). Then, under locks
    (agent → trade → request) and re-checked, status ``expired`` with ``resolved_at``, the
    trade released as ``expired`` (its reservation freed) and ``approval.completed``
    published. A request decided meanwhile is skipped; one that fails is logged and counted
    in ``failed`` without stopping the others.
    """
    from trades import services as trade_services

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
                    closed = oversight_request_close(request_id, reason="approval request expired")
                    reachable = closed != UNREACHABLE
                if closed == ALREADY_CLOSED:
                    followed = approval_follow_service(approval_request_id=request_id)
                    if followed.status != RequestStatus.PENDING:
                        expired += followed.status == RequestStatus.EXPIRED
                        continue
            with transaction.atomic():
                trade, locked = _lock_for_change(request_id)
                if locked.status != RequestStatus.PENDING or locked.expires_at > now:
                    continue
                locked.status = RequestStatus.EXPIRED
                locked.resolved_at = now
                locked.save(update_fields=["status", "resolved_at"])
                trade_services.trade_release(
                    trade=trade, status="expired", reason="approval request expired"
                )
                _publish(locked, "approval.completed")
            expired += 1
        except Exception:
            failed += 1
            background_row_failed("approval-expiry", request_id)
    return ExpiryReport(expired=expired, failed=failed)


def approvals_expire_due(now: datetime | None = None) -> int:
    """Expire the due approval requests (see ``approvals_expire_report``); returns how many."""
    return approvals_expire_report(now=now).expired
