"""Client for `creto.metering.v1.MeteringService`, returning plain dataclasses.

Trades are metered with `event_type="api_call"` and the metric code in `code`: the Creto
event-type enum has no trade type.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf import json_format

from ._channel import ServiceClient, to_datetime, to_timestamp
from ._generated.creto.metering.v1 import metering_pb2 as pb
from ._generated.creto.metering.v1 import metering_pb2_grpc as pb_grpc

SERVICE = "metering"
SERVICE_NAME = "creto.metering.v1.MeteringService"
# Safe to retry: ingestion is idempotent by transaction_id, quota reads have no effect.
IDEMPOTENT_METHODS = ("CheckQuota", "GetQuotaStatus", "IngestEvent", "IngestEventBatch")

_EVENT_TYPE_BY_NAME = {
    name.lower(): number
    for name, number in pb.UsageEventType.items()
    if number != pb.USAGE_EVENT_TYPE_UNSPECIFIED
}
_EVENT_TYPE_NAME = {number: name for name, number in _EVENT_TYPE_BY_NAME.items()}
USAGE_EVENT_TYPES: tuple[str, ...] = tuple(_EVENT_TYPE_BY_NAME)

_INGEST_STATUS_NAME = {
    number: name.removeprefix("INGEST_STATUS_").lower() for name, number in pb.IngestStatus.items()
}
_PERIOD_NAME = {
    number: name.removeprefix("QUOTA_PERIOD_").lower() for name, number in pb.QuotaPeriod.items()
}


@dataclass(frozen=True)
class UsageEvent:
    """One usage event. `event_type` is a name from USAGE_EVENT_TYPES ("api_call", ...).

    The metering service ignores a repeated `transaction_id` (DUPLICATE). Properties are
    strings; `quota_limit`/`quota_period` properties set the agent's limit for `code` on the
    reference service.
    """

    transaction_id: str
    agent_id: str
    code: str
    quantity: int
    event_type: str = "api_call"
    organization_id: str = ""
    external_subscription_id: str = ""
    timestamp: datetime | None = None
    properties: dict[str, str] = field(default_factory=dict)
    delegation_depth: int = 0


@dataclass(frozen=True)
class IngestResult:
    """status: "accepted", "duplicate", "validation_error", "quota_exceeded" or "internal_error"."""

    status: str
    error_message: str


@dataclass(frozen=True)
class BatchResult:
    accepted_count: int
    duplicate_count: int
    failed_count: int
    results: list[IngestResult]  # in request order


@dataclass(frozen=True)
class QuotaDecision:
    """Whether `quantity` more fits. `limit` 0 with `allowed` means the metric is unlimited."""

    allowed: bool
    current_usage: int
    limit: int
    remaining: int
    denial_reason: str


@dataclass(frozen=True)
class QuotaStatus:
    """period: "hourly", "daily", "weekly", "monthly", "lifetime" or "unspecified" (no limit)."""

    metric_code: str
    limit: int
    current_usage: int
    remaining: int
    usage_percentage: float
    period: str
    period_start: datetime | None
    period_end: datetime | None


def _event_type_number(name: str) -> int:
    try:
        return _EVENT_TYPE_BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown event_type {name!r}; expected one of {USAGE_EVENT_TYPES}"
        ) from None


def _event_to_proto(event: UsageEvent) -> pb.UsageEvent:
    event_type = _event_type_number(event.event_type)
    message = pb.UsageEvent(
        transaction_id=event.transaction_id,
        organization_id=event.organization_id,
        agent_id=event.agent_id,
        external_subscription_id=event.external_subscription_id,
        event_type=event_type,
        code=event.code,
        quantity=event.quantity,
        delegation_depth=event.delegation_depth,
    )
    if event.timestamp is not None:
        message.timestamp.CopyFrom(to_timestamp(event.timestamp))
    if event.properties:
        message.properties.update({str(k): str(v) for k, v in event.properties.items()})
    return message


def _property_text(value: object) -> str:
    # Struct numbers arrive as floats (1 -> 1.0); show whole numbers without the fraction.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def _event_from_proto(message: pb.UsageEvent) -> UsageEvent:
    properties = json_format.MessageToDict(message.properties) if message.properties else {}
    return UsageEvent(
        transaction_id=message.transaction_id,
        agent_id=message.agent_id,
        code=message.code,
        quantity=message.quantity,
        event_type=_EVENT_TYPE_NAME.get(message.event_type, "unspecified"),
        organization_id=message.organization_id,
        external_subscription_id=message.external_subscription_id,
        timestamp=to_datetime(message, "timestamp"),
        properties={k: _property_text(v) for k, v in properties.items()},
        delegation_depth=message.delegation_depth,
    )


def _ingest_status(number: int) -> str:
    # An unknown or unspecified status is not a success the caller may rely on.
    name = _INGEST_STATUS_NAME.get(number, "internal_error")
    return "internal_error" if name == "unspecified" else name


class MeteringClient(ServiceClient):
    """Calls the metering service over one channel; every call has a deadline of `timeout`.

    `request_id_provider()` supplies the `x-request-id` metadata (none when it returns None);
    `on_call(service, method, code, seconds)` observes every call ("OK" or the status name).
    Every failure raises a `grpc_clients.errors.GrpcClientError` subclass.
    """

    SERVICE = SERVICE
    SERVICE_NAME = SERVICE_NAME
    IDEMPOTENT_METHODS = IDEMPOTENT_METHODS
    STUB = pb_grpc.MeteringServiceStub

    def ingest_event(self, event: UsageEvent) -> IngestResult:
        request = pb.IngestEventRequest(event=_event_to_proto(event))
        return self._channel.call(
            "IngestEvent",
            self._stub.IngestEvent,
            request,
            lambda reply: IngestResult(_ingest_status(reply.status), reply.error_message),
        )

    def ingest_batch(
        self, events: Sequence[UsageEvent], *, continue_on_error: bool = True
    ) -> BatchResult:
        request = pb.IngestEventBatchRequest(
            events=[_event_to_proto(e) for e in events], continue_on_error=continue_on_error
        )

        def convert(reply: pb.IngestEventBatchResponse) -> BatchResult:
            by_index = {r.index: r for r in reply.results}
            results = [
                IngestResult(_ingest_status(by_index[i].status), by_index[i].error_message)
                if i in by_index
                else IngestResult("internal_error", "no result for this event")
                for i in range(len(events))
            ]
            return BatchResult(
                accepted_count=reply.accepted_count,
                duplicate_count=reply.duplicate_count,
                failed_count=reply.failed_count,
                results=results,
            )

        return self._channel.call("IngestEventBatch", self._stub.IngestEventBatch, request, convert)

    def check_quota(
        self, *, agent_id: str, metric_code: str, quantity: int, organization_id: str = ""
    ) -> QuotaDecision:
        request = pb.CheckQuotaRequest(
            organization_id=organization_id,
            agent_id=agent_id,
            metric_code=metric_code,
            quantity=quantity,
        )
        return self._channel.call(
            "CheckQuota",
            self._stub.CheckQuota,
            request,
            lambda reply: QuotaDecision(
                allowed=reply.allowed,
                current_usage=reply.current_usage,
                limit=reply.limit,
                remaining=reply.remaining,
                denial_reason=reply.denial_reason,
            ),
        )

    def get_quota_status(
        self, *, agent_id: str, metric_code: str, organization_id: str = ""
    ) -> QuotaStatus:
        request = pb.GetQuotaStatusRequest(
            organization_id=organization_id, agent_id=agent_id, metric_code=metric_code
        )
        return self._channel.call(
            "GetQuotaStatus",
            self._stub.GetQuotaStatus,
            request,
            lambda reply: QuotaStatus(
                metric_code=reply.metric_code,
                limit=reply.limit,
                current_usage=reply.current_usage,
                remaining=reply.remaining,
                usage_percentage=reply.usage_percentage,
                period=_PERIOD_NAME.get(reply.period, "unspecified"),
                period_start=to_datetime(reply, "period_start"),
                period_end=to_datetime(reply, "period_end"),
            ),
        )

    def stream_events(
        self,
        *,
        organization_id: str = "",
        event_types: Iterable[str] = (),
        metric_codes: Iterable[str] = (),
        since: datetime | None = None,
    ) -> list[UsageEvent]:
        """All stored events matching the filters, read within one deadline."""
        request = pb.StreamEventsRequest(
            organization_id=organization_id,
            event_types=[_event_type_number(name) for name in event_types],
            metric_codes=list(metric_codes),
        )
        if since is not None:
            request.since.CopyFrom(to_timestamp(since))
        return self._channel.call(
            "StreamEvents",
            self._stub.StreamEvents,
            request,
            lambda replies: [_event_from_proto(message) for message in replies],
        )
