"""Reference `creto.oversight.v1.OversightService`, state in memory.

All requests live in memory behind one lock: thread-safe within a process, lost when the
process stops.

Policy ("default-v1", SPEC section 5 rule 5)
    `SubmitRequest` decides from the request's `action.parameters` (string values, Decimal
    arithmetic): `notional`, `budget`, `auto_approval_limit`, `approval_budget_fraction`
    (required) and `quorum_threshold` (optional, default "100000"; the server configuration
    may change the defaults of any of these). Approval is required when
    notional >= auto_approval_limit or notional >= approval_budget_fraction * budget; it then
    needs 2 distinct approvers when notional >= quorum_threshold, else 1, and the request stays
    PENDING. Otherwise the request is APPROVED at once (approvals_required 0; the transition's
    actor is "policy"). A missing or non-numeric parameter answers INVALID_ARGUMENT.

Lifecycle
    `request_id` is chosen by the caller (a UUID is generated when empty); submitting the same
    id again returns the existing request unchanged. A `timeout` makes an undecided request
    EXPIRED once it has passed; expiry is applied lazily, so any call made after the deadline
    sees EXPIRED (no timeout: the request never expires). `ApproveRequest` answers NOT_FOUND,
    FAILED_PRECONDITION (not pending), ALREADY_EXISTS (same approver twice); each approval
    short of the quorum is recorded as a PENDING -> PENDING transition. `RejectRequest` needs a
    reason (INVALID_ARGUMENT) and a pending request. `CancelRequest` (a project extension)
    cancels any request not yet final. Every transition records from, to, time, actor, reason.
    `ListRequests` filters by tenant and states, newest first, with an opaque page token;
    `approver_id` is accepted and ignored (this policy assigns no approvers).

Standard subset
    With ``extensions=False`` the servicer serves only the rpcs of Creto's
    `creto.oversight.v1` design: `CancelRequest` answers UNIMPLEMENTED, as a service built from
    Creto's proto does. Tests use it to prove the server works against such a service
    (`python -m reference_services --oversight-standard`).
"""

from __future__ import annotations

import base64
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import grpc

from grpc_clients._generated.creto.oversight.v1 import oversight_pb2 as pb
from grpc_clients._generated.creto.oversight.v1 import oversight_pb2_grpc as pb_grpc

from ._common import ServicerBase, to_timestamp, utc_now

POLICY_ID = "default-v1"
POLICY_ACTOR = "policy"
EXPIRY_ACTOR = "system"
DEFAULT_POLICY_PARAMETERS: Mapping[str, str] = {"quorum_threshold": "100000"}
REQUIRED_PARAMETERS = ("notional", "budget", "auto_approval_limit", "approval_budget_fraction")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OversightService"].full_name

_UNDECIDED = frozenset({pb.REQUEST_STATE_PENDING, pb.REQUEST_STATE_REVIEWING})
_FINAL = frozenset(
    {
        pb.REQUEST_STATE_APPROVED,
        pb.REQUEST_STATE_REJECTED,
        pb.REQUEST_STATE_EXPIRED,
        pb.REQUEST_STATE_CANCELLED,
    }
)


class PolicyInputError(ValueError):
    """The policy parameters of a request are missing or not numbers."""


@dataclass(frozen=True)
class PolicyOutcome:
    approvals_required: int
    reason: str


def evaluate_default_policy(parameters: Mapping[str, str]) -> PolicyOutcome:
    """Apply the default policy to string parameters; approvals_required 0 means auto-approve."""
    values: dict[str, Decimal] = {}
    for name in (*REQUIRED_PARAMETERS, "quorum_threshold"):
        raw = parameters.get(name)
        if raw is None or raw.strip() == "":
            raise PolicyInputError(f"parameter {name!r} is required")
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            raise PolicyInputError(f"parameter {name!r} must be a decimal number") from None
        if not value.is_finite() or value < 0:
            raise PolicyInputError(f"parameter {name!r} must be a finite number >= 0")
        values[name] = value
    notional = values["notional"]
    budget_limit = values["approval_budget_fraction"] * values["budget"]
    reasons = []
    if notional >= values["auto_approval_limit"]:
        reasons.append(
            f"notional {notional} >= auto_approval_limit {values['auto_approval_limit']}"
        )
    if notional >= budget_limit:
        reasons.append(f"notional {notional} >= {values['approval_budget_fraction']} of budget")
    if not reasons:
        return PolicyOutcome(0, f"auto-approved by {POLICY_ID}: notional {notional} below limits")
    quorum = 2 if notional >= values["quorum_threshold"] else 1
    return PolicyOutcome(quorum, "approval required: " + "; ".join(reasons))


@dataclass
class _Transition:
    from_state: int
    to_state: int
    at: datetime
    actor_id: str
    reason: str


@dataclass
class _Request:
    sequence: int
    request_id: str
    tenant_id: str
    body: pb.OversightRequest
    submitted_at: datetime
    expires_at: datetime | None
    approvals_required: int
    state: int = pb.REQUEST_STATE_UNSPECIFIED
    updated_at: datetime | None = None
    approver_ids: list[str] = field(default_factory=list)
    decision: pb.ApprovalDecision | None = None
    transitions: list[_Transition] = field(default_factory=list)

    def move(self, to_state: int, at: datetime, actor_id: str, reason: str) -> None:
        self.transitions.append(_Transition(self.state, to_state, at, actor_id, reason))
        self.state = to_state
        self.updated_at = at


def _decision(kind: int, actor_id: str, actor_name: str, at: datetime, text: str):
    return pb.ApprovalDecision(
        decision=kind,
        approver_id=actor_id,
        approver_name=actor_name,
        decided_at=to_timestamp(at),
        justification=text,
    )


class OversightServicer(ServicerBase, pb_grpc.OversightServiceServicer):
    """In-memory, thread-safe oversight service; see the module docstring for the semantics."""

    logger = logging.getLogger("reference_services.oversight")

    def __init__(
        self,
        policy_defaults: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        extensions: bool = True,
    ) -> None:
        super().__init__()
        self.extensions = extensions
        self.policy_defaults = dict(DEFAULT_POLICY_PARAMETERS)
        self.policy_defaults.update(policy_defaults or {})
        self.clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, _Request] = {}

    # -- helpers (callers hold the lock) -----------------------------------------------------

    def _expire_if_due(self, record: _Request, now: datetime) -> None:
        if record.state in _UNDECIDED and record.expires_at and now >= record.expires_at:
            record.move(pb.REQUEST_STATE_EXPIRED, record.expires_at, EXPIRY_ACTOR, "timed out")

    def _get(self, request_id: str, context) -> _Request:
        record = self._requests.get(request_id)
        if record is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"request {request_id!r} not found")
        self._expire_if_due(record, self.clock())
        return record

    @staticmethod
    def _status(record: _Request, *, with_transitions: bool) -> pb.RequestStatus:
        status = pb.RequestStatus(
            request_id=record.request_id,
            state=record.state,
            submitted_at=to_timestamp(record.submitted_at),
            updated_at=to_timestamp(record.updated_at or record.submitted_at),
            approvals_required=record.approvals_required,
            approvals_received=len(record.approver_ids),
        )
        if record.decision is not None:
            status.decision.CopyFrom(record.decision)
        if with_transitions:
            for item in record.transitions:
                status.transitions.add(
                    from_state=item.from_state,
                    to_state=item.to_state,
                    timestamp=to_timestamp(item.at),
                    actor_id=item.actor_id,
                    reason=item.reason,
                )
        return status

    # -- rpcs ------------------------------------------------------------------------------

    def SubmitRequest(self, request, context):
        self._begin("SubmitRequest", context)
        request_id = request.request_id or str(uuid.uuid4())
        with self._lock:
            existing = self._requests.get(request_id)
            if existing is not None:
                self._expire_if_due(existing, self.clock())
                return pb.SubmitRequestResponse(
                    request_id=request_id,
                    status=self._status(existing, with_transitions=False),
                    policy_id=POLICY_ID,
                )
        parameters = dict(self.policy_defaults)
        parameters.update({p.key: p.value for p in request.request.action.parameters})
        try:
            outcome = evaluate_default_policy(parameters)
        except PolicyInputError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        now = self.clock()
        timeout = request.timeout.ToTimedelta() if request.HasField("timeout") else timedelta(0)
        body = pb.OversightRequest()
        body.CopyFrom(request.request)
        with self._lock:
            existing = self._requests.get(request_id)
            if existing is not None:  # lost a race with an identical submission
                record = existing
            else:
                record = _Request(
                    sequence=len(self._requests),
                    request_id=request_id,
                    tenant_id=request.tenant_id,
                    body=body,
                    submitted_at=now,
                    expires_at=now + timeout if timeout > timedelta(0) else None,
                    approvals_required=outcome.approvals_required,
                )
                record.move(
                    pb.REQUEST_STATE_PENDING, now, request.agent.agent_id or "agent", "submitted"
                )
                if outcome.approvals_required == 0:
                    record.move(pb.REQUEST_STATE_APPROVED, now, POLICY_ACTOR, outcome.reason)
                    record.decision = _decision(
                        pb.DECISION_TYPE_APPROVED, POLICY_ACTOR, POLICY_ID, now, outcome.reason
                    )
                else:
                    record.transitions[-1].reason = f"submitted; {outcome.reason}"
                self._requests[request_id] = record
            status = self._status(record, with_transitions=False)
        return pb.SubmitRequestResponse(request_id=request_id, status=status, policy_id=POLICY_ID)

    def GetRequestStatus(self, request, context):
        self._begin("GetRequestStatus", context)
        with self._lock:
            record = self._get(request.request_id, context)
            return self._status(record, with_transitions=request.include_audit_trail)

    def ApproveRequest(self, request, context):
        self._begin("ApproveRequest", context)
        if not request.approver_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "approver_id is required")
        with self._lock:
            record = self._get(request.request_id, context)
            if record.state not in _UNDECIDED:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"request is {pb.RequestState.Name(record.state)}, not pending",
                )
            if request.approver_id in record.approver_ids:
                context.abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"{request.approver_id} has already approved this request",
                )
            now = self.clock()
            record.approver_ids.append(request.approver_id)
            received = len(record.approver_ids)
            decision = _decision(
                pb.DECISION_TYPE_APPROVED,
                request.approver_id,
                request.approver_name,
                now,
                request.justification,
            )
            note = f"approval {received} of {record.approvals_required}"
            if request.justification:
                note += f": {request.justification}"
            if received >= record.approvals_required:
                record.move(pb.REQUEST_STATE_APPROVED, now, request.approver_id, note)
                record.decision = decision
            else:
                record.move(record.state, now, request.approver_id, note)
            return pb.ApproveResponse(
                request_id=record.request_id,
                decision=decision,
                new_state=record.state,
                approved_at=to_timestamp(now),
                requires_additional_approvals=record.state != pb.REQUEST_STATE_APPROVED,
            )

    def RejectRequest(self, request, context):
        self._begin("RejectRequest", context)
        with self._lock:
            record = self._get(request.request_id, context)
            if not request.reason.strip():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a rejection needs a reason")
            if record.state not in _UNDECIDED:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"request is {pb.RequestState.Name(record.state)}, not pending",
                )
            now = self.clock()
            decision = _decision(
                pb.DECISION_TYPE_REJECTED,
                request.rejector_id,
                request.rejector_name,
                now,
                request.reason,
            )
            record.move(pb.REQUEST_STATE_REJECTED, now, request.rejector_id, request.reason)
            record.decision = decision
            return pb.RejectResponse(
                request_id=record.request_id,
                decision=decision,
                rejected_at=to_timestamp(now),
                can_resubmit=request.allow_resubmission,
            )

    def CancelRequest(self, request, context):
        self._begin("CancelRequest", context)
        if not self.extensions:
            # What the generated base servicer answers for an rpc a service does not implement.
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        with self._lock:
            record = self._get(request.request_id, context)
            if record.state in _FINAL:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"request is already {pb.RequestState.Name(record.state)}",
                )
            now = self.clock()
            record.move(
                pb.REQUEST_STATE_CANCELLED,
                now,
                request.actor_id,
                request.reason or "cancelled",
            )
            return pb.CancelRequestResponse(
                request_id=record.request_id,
                new_state=record.state,
                cancelled_at=to_timestamp(now),
            )

    def ListRequests(self, request, context):
        self._begin("ListRequests", context)
        page_size = request.page_size if request.page_size > 0 else DEFAULT_PAGE_SIZE
        page_size = min(page_size, MAX_PAGE_SIZE)
        before = _decode_page_token(request.page_token, context)
        states = set(request.states)
        now = self.clock()
        with self._lock:
            matching = []
            for record in self._requests.values():
                self._expire_if_due(record, now)
                if request.tenant_id and record.tenant_id != request.tenant_id:
                    continue
                if states and record.state not in states:
                    continue
                matching.append(record)
            matching.sort(key=lambda r: r.sequence, reverse=True)
            remaining = [r for r in matching if before is None or r.sequence < before]
            page = remaining[:page_size]
            response = pb.ListRequestsResponse(total_count=len(matching))
            for record in page:
                response.requests.add().CopyFrom(record.body)
        if len(remaining) > page_size:
            response.next_page_token = _encode_page_token(page[-1].sequence)
        return response


def _encode_page_token(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"before:{sequence}".encode()).decode()


def _decode_page_token(token: str, context) -> int | None:
    if not token:
        return None
    try:
        prefix, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix != "before":
            raise ValueError(token)
        return int(value)
    except (ValueError, UnicodeDecodeError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid page_token")
        raise  # unreachable: abort raises
