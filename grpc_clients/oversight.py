"""Client for `creto.oversight.v1.OversightService`, returning plain dataclasses.

States are lower-case names: "pending", "reviewing", "approved", "rejected", "expired",
"escalated", "cancelled" ("unspecified" if the service sends none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from ._channel import ServiceClient, to_datetime
from ._generated.creto.oversight.v1 import oversight_pb2 as pb
from ._generated.creto.oversight.v1 import oversight_pb2_grpc as pb_grpc

SERVICE = "oversight"
SERVICE_NAME = "creto.oversight.v1.OversightService"
# Safe to retry: reads, and SubmitRequest is idempotent by the caller-chosen request_id.
IDEMPOTENT_METHODS = ("GetRequestStatus", "ListRequests", "SubmitRequest")


def _names(enum, prefix: str) -> dict[int, str]:
    return {number: name.removeprefix(prefix).lower() for name, number in enum.items()}


_STATE_NAME = _names(pb.RequestState, "REQUEST_STATE_")
_STATE_NUMBER = {name: number for number, name in _STATE_NAME.items() if number}
_DECISION_NAME = _names(pb.DecisionType, "DECISION_TYPE_")
_REQUEST_TYPE_NAME = _names(pb.RequestType, "REQUEST_TYPE_")
_RISK_NAME = _names(pb.RiskLevel, "RISK_LEVEL_")
_RISK_NUMBER = {name: number for number, name in _RISK_NAME.items() if number}
_PRIORITY_NUMBER = {
    name: number for number, name in _names(pb.Priority, "PRIORITY_").items() if number
}
_CATEGORY_NUMBER = {
    name: number
    for number, name in _names(pb.RejectionCategory, "REJECTION_CATEGORY_").items()
    if number
}

REQUEST_STATES: tuple[str, ...] = tuple(_STATE_NUMBER)
LEVELS: tuple[str, ...] = tuple(_RISK_NUMBER)  # risk levels and priorities
REJECTION_CATEGORIES: tuple[str, ...] = tuple(_CATEGORY_NUMBER)


@dataclass(frozen=True)
class SubmitResult:
    request_id: str
    state: str
    approvals_required: int  # 0 when the policy approved the request at once
    policy_id: str


@dataclass(frozen=True)
class Transition:
    from_state: str
    to_state: str
    timestamp: datetime | None
    actor_id: str
    reason: str


@dataclass(frozen=True)
class DecisionInfo:
    decision: str  # "approved", "rejected" or "conditional_approval"
    approver_id: str
    approver_name: str
    decided_at: datetime | None
    justification: str


@dataclass(frozen=True)
class RequestStatusInfo:
    request_id: str
    state: str
    submitted_at: datetime | None
    updated_at: datetime | None
    approvals_required: int
    approvals_received: int
    decision: DecisionInfo | None
    transitions: list[Transition]  # empty unless asked for the audit trail


@dataclass(frozen=True)
class ApproveResult:
    request_id: str
    new_state: str
    approved_at: datetime | None
    requires_additional_approvals: bool


@dataclass(frozen=True)
class RejectResult:
    request_id: str
    rejected_at: datetime | None
    can_resubmit: bool


@dataclass(frozen=True)
class CancelResult:
    request_id: str
    new_state: str
    cancelled_at: datetime | None


@dataclass(frozen=True)
class RequestSummary:
    subject: str
    description: str
    request_type: str  # e.g. "financial_transaction"
    risk_level: str
    parameters: dict[str, str]


@dataclass(frozen=True)
class ListResult:
    requests: list[RequestSummary]
    next_page_token: str  # "" on the last page
    total_count: int


def _lookup(table: Mapping[str, int], value: str, what: str) -> int:
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(table)}") from None


def _status_info(reply: pb.RequestStatus) -> RequestStatusInfo:
    decision = None
    if reply.HasField("decision"):
        decision = DecisionInfo(
            decision=_DECISION_NAME.get(reply.decision.decision, "unspecified"),
            approver_id=reply.decision.approver_id,
            approver_name=reply.decision.approver_name,
            decided_at=to_datetime(reply.decision, "decided_at"),
            justification=reply.decision.justification,
        )
    return RequestStatusInfo(
        request_id=reply.request_id,
        state=_STATE_NAME.get(reply.state, "unspecified"),
        submitted_at=to_datetime(reply, "submitted_at"),
        updated_at=to_datetime(reply, "updated_at"),
        approvals_required=reply.approvals_required,
        approvals_received=reply.approvals_received,
        decision=decision,
        transitions=[
            Transition(
                from_state=_STATE_NAME.get(t.from_state, "unspecified"),
                to_state=_STATE_NAME.get(t.to_state, "unspecified"),
                timestamp=to_datetime(t, "timestamp"),
                actor_id=t.actor_id,
                reason=t.reason,
            )
            for t in reply.transitions
        ],
    )


def _summary(message: pb.OversightRequest) -> RequestSummary:
    return RequestSummary(
        subject=message.subject,
        description=message.description,
        request_type=_REQUEST_TYPE_NAME.get(message.type, "unspecified"),
        risk_level=_RISK_NAME.get(message.risk_level, "unspecified"),
        parameters={p.key: p.value for p in message.action.parameters},
    )


class OversightClient(ServiceClient):
    """Calls the oversight service over one channel; every call has a deadline of `timeout`.

    `request_id_provider()` supplies the `x-request-id` metadata (none when it returns None);
    `on_call(service, method, code, seconds)` observes every call ("OK" or the status name).
    Every failure raises a `grpc_clients.errors.GrpcClientError` subclass.
    """

    SERVICE = SERVICE
    SERVICE_NAME = SERVICE_NAME
    IDEMPOTENT_METHODS = IDEMPOTENT_METHODS
    STUB = pb_grpc.OversightServiceStub

    def submit_request(
        self,
        *,
        request_id: str,
        agent_id: str,
        agent_name: str,
        agent_type: str = "trading_agent",
        tenant_id: str,
        subject: str,
        description: str,
        parameters: Mapping[str, str],
        risk_level: str,
        priority: str,
        timeout: timedelta,
        tags: Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
        action_type: str = "trade",
    ) -> SubmitResult:
        """Submit a financial transaction for oversight; resubmitting a request_id is a no-op.

        The reference policy reads `notional`, `budget`, `auto_approval_limit`,
        `approval_budget_fraction` and optionally `quorum_threshold` from `parameters`.
        """
        duration = Duration()
        duration.FromTimedelta(timeout)
        request = pb.SubmitRequestRequest(
            request_id=request_id,
            agent=pb.AgentInfo(agent_id=agent_id, agent_type=agent_type, agent_name=agent_name),
            tenant_id=tenant_id,
            request=pb.OversightRequest(
                type=pb.REQUEST_TYPE_FINANCIAL_TRANSACTION,
                subject=subject,
                description=description,
                action=pb.ActionDetails(
                    action_type=action_type,
                    parameters=[
                        pb.Parameter(key=str(k), value=str(v)) for k, v in parameters.items()
                    ],
                ),
                risk_level=_lookup(_RISK_NUMBER, risk_level, "risk level"),
            ),
            priority=_lookup(_PRIORITY_NUMBER, priority, "priority"),
            timeout=duration,
            tags=list(tags),
            metadata=dict(metadata or {}),
        )
        return self._channel.call(
            "SubmitRequest",
            self._stub.SubmitRequest,
            request,
            lambda reply: SubmitResult(
                request_id=reply.request_id,
                state=_STATE_NAME.get(reply.status.state, "unspecified"),
                approvals_required=reply.status.approvals_required,
                policy_id=reply.policy_id,
            ),
        )

    def get_request_status(
        self, request_id: str, *, include_audit_trail: bool = False
    ) -> RequestStatusInfo:
        request = pb.GetRequestStatusRequest(
            request_id=request_id, include_audit_trail=include_audit_trail
        )
        return self._channel.call(
            "GetRequestStatus", self._stub.GetRequestStatus, request, _status_info
        )

    def approve(
        self, *, request_id: str, approver_id: str, approver_name: str, justification: str = ""
    ) -> ApproveResult:
        request = pb.ApproveRequestRequest(
            request_id=request_id,
            approver_id=approver_id,
            approver_name=approver_name,
            justification=justification,
        )
        return self._channel.call(
            "ApproveRequest",
            self._stub.ApproveRequest,
            request,
            lambda reply: ApproveResult(
                request_id=reply.request_id,
                new_state=_STATE_NAME.get(reply.new_state, "unspecified"),
                approved_at=to_datetime(reply, "approved_at"),
                requires_additional_approvals=reply.requires_additional_approvals,
            ),
        )

    def reject(
        self,
        *,
        request_id: str,
        rejector_id: str,
        rejector_name: str,
        reason: str,
        category: str | None = "policy_violation",
    ) -> RejectResult:
        """Reject a pending request; ``category`` None sends no category (unspecified)."""
        request = pb.RejectRequestRequest(
            request_id=request_id,
            rejector_id=rejector_id,
            rejector_name=rejector_name,
            reason=reason,
            category=(
                pb.REJECTION_CATEGORY_UNSPECIFIED
                if category is None
                else _lookup(_CATEGORY_NUMBER, category, "rejection category")
            ),
        )
        return self._channel.call(
            "RejectRequest",
            self._stub.RejectRequest,
            request,
            lambda reply: RejectResult(
                request_id=reply.request_id,
                rejected_at=to_datetime(reply, "rejected_at"),
                can_resubmit=reply.can_resubmit,
            ),
        )

    def cancel(self, *, request_id: str, actor_id: str, reason: str = "") -> CancelResult:
        """Cancel a request not yet decided (project extension of the Creto API).

        A service built from Creto's proto answers UNIMPLEMENTED (``ServiceUnavailable`` with
        ``code == "UNIMPLEMENTED"``); ``oversight.services`` then closes the request with
        ``reject``.
        """
        request = pb.CancelRequestRequest(request_id=request_id, actor_id=actor_id, reason=reason)
        return self._channel.call(
            "CancelRequest",
            self._stub.CancelRequest,
            request,
            lambda reply: CancelResult(
                request_id=reply.request_id,
                new_state=_STATE_NAME.get(reply.new_state, "unspecified"),
                cancelled_at=to_datetime(reply, "cancelled_at"),
            ),
        )

    def list_requests(
        self,
        *,
        tenant_id: str = "",
        states: Iterable[str] = (),
        page_size: int = 50,
        page_token: str = "",
    ) -> ListResult:
        request = pb.ListRequestsRequest(
            tenant_id=tenant_id,
            states=[_lookup(_STATE_NUMBER, s, "request state") for s in states],
            page_size=page_size,
            page_token=page_token,
        )
        return self._channel.call(
            "ListRequests",
            self._stub.ListRequests,
            request,
            lambda reply: ListResult(
                requests=[_summary(m) for m in reply.requests],
                next_page_token=reply.next_page_token,
                total_count=reply.total_count,
            ),
        )
