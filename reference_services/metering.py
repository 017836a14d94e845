"""Reference `creto.metering.v1.MeteringService`, state in memory.

All state (events, usage, per-agent limits) is kept in memory behind one lock: it is
thread-safe within a process and lost when the process stops.

Ingestion
    `IngestEvent` and `IngestEventBatch` are idempotent by `transaction_id`: an event whose
    transaction id was already accepted answers DUPLICATE and is counted once. An event with an
    empty `transaction_id`, `agent_id` or `code`, or a negative `quantity`, answers
    VALIDATION_ERROR and is not stored. An event without a timestamp is stamped with the
    server's time. Ingestion never refuses usage for being over quota (usage that happened is
    recorded); callers ask `CheckQuota` before acting. In a batch with
    `continue_on_error=false`, the events after the first failure are not ingested and answer
    VALIDATION_ERROR ("skipped"); `results` always has one entry per event, in request order.

Quotas
    Usage is kept per (organization_id, agent_id, code) as timestamped quantities. A quota is a
    limit per (organization_id, agent_id, metric code) over a window aligned to UTC: the hour,
    the day, the ISO week (from Monday 00:00) or the calendar month.

    Default limits come from the server configuration, a mapping
    `{metric_code: (limit, period)}` with period one of "hourly", "daily", "weekly",
    "monthly"; it defaults to `DEFAULT_LIMITS` (api_calls 10,000/day, trade_executions
    100/day). A metric with no limit configured is unlimited: `CheckQuota` allows it and
    reports `limit` 0, which then means "no limit" (and `remaining` 0); `GetQuotaStatus`
    reports limit 0, usage_percentage 0, period UNSPECIFIED, no window, and the usage of all
    time. (A configured limit of 0 is a real zero quota: it denies, and has a period.)

    Per-agent limits are set by event properties: an event whose `properties` contain the
    string `quota_limit` (a non-negative integer, e.g. "25") and optionally `quota_period`
    ("hourly", "daily", "weekly" or "monthly"; default: the configured period of that metric,
    else "daily") sets that agent's limit for the event's `code`. An event with quantity 0 is a
    pure configuration event and adds no usage. A bad value answers VALIDATION_ERROR.

    `CheckQuota(quantity)` allows iff current_usage + quantity <= limit;
    remaining = max(limit - current_usage, 0).

Streaming
    `StreamEvents` sends the stored events matching the filters (organization, event types,
    metric codes, timestamp >= since) in ingestion order and then ends; it does not follow
    new events.
"""

from __future__ import annotations

import calendar
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
from google.protobuf import json_format

from grpc_clients._generated.creto.metering.v1 import metering_pb2 as pb
from grpc_clients._generated.creto.metering.v1 import metering_pb2_grpc as pb_grpc

from ._common import ServicerBase, from_timestamp, to_timestamp, utc_now

HOURLY = "hourly"
DAILY = "daily"
WEEKLY = "weekly"
MONTHLY = "monthly"
PERIODS = (HOURLY, DAILY, WEEKLY, MONTHLY)

DEFAULT_LIMITS: Mapping[str, tuple[int, str]] = {
    "api_calls": (10_000, DAILY),
    "trade_executions": (100, DAILY),
}

QUOTA_LIMIT_PROPERTY = "quota_limit"
QUOTA_PERIOD_PROPERTY = "quota_period"
# Quota windows whose running totals a key keeps (current hour, day, week, month, …).
_WINDOWS_KEPT = 8

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MeteringService"].full_name

_PERIOD_TO_PROTO = {
    HOURLY: pb.QUOTA_PERIOD_HOURLY,
    DAILY: pb.QUOTA_PERIOD_DAILY,
    WEEKLY: pb.QUOTA_PERIOD_WEEKLY,
    MONTHLY: pb.QUOTA_PERIOD_MONTHLY,
}

_PERIOD_NOUN = {HOURLY: "hour", DAILY: "day", WEEKLY: "week", MONTHLY: "month"}

UsageKey = tuple[str, str, str]  # (organization_id, agent_id, code)


class EventRejected(ValueError):
    """An event failed validation; the message says why."""


def period_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC-aligned window [start, end) of `period` that contains `now`."""
    if period == HOURLY:
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == DAILY:
        return day_start, day_start + timedelta(days=1)
    if period == WEEKLY:
        start = day_start - timedelta(days=now.weekday())
        return start, start + timedelta(days=7)
    if period == MONTHLY:
        start = day_start.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        return start, start + timedelta(days=days)
    raise ValueError(f"unknown quota period {period!r}")


def _normalise_limits(limits: Mapping[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    normalised = {}
    for code, (limit, period) in limits.items():
        if period not in PERIODS:
            raise ValueError(f"quota period for {code!r} must be one of {PERIODS}, not {period!r}")
        if int(limit) < 0:
            raise ValueError(f"quota limit for {code!r} must not be negative")
        normalised[code] = (int(limit), period)
    return normalised


@dataclass(frozen=True)
class _Quota:
    limit: int  # 0 with period None: unlimited
    period: str | None


class MeteringServicer(ServicerBase, pb_grpc.MeteringServiceServicer):
    """In-memory, thread-safe metering service; see the module docstring for the semantics."""

    logger = logging.getLogger("reference_services.metering")

    def __init__(
        self,
        default_limits: Mapping[str, tuple[int, str]] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__()
        self.default_limits = _normalise_limits(
            DEFAULT_LIMITS if default_limits is None else default_limits
        )
        # Tests replace the clock to pin quota windows.
        self.clock = clock
        self._lock = threading.Lock()
        self._events: list[pb.UsageEvent] = []
        self._transaction_ids: set[str] = set()
        self._usage: dict[UsageKey, list[tuple[datetime, int]]] = {}
        # Each key's usage per window asked about (None: all time), kept up to date as events
        # arrive: CheckQuota runs on every order and must not sum the key's whole history.
        self._totals: dict[UsageKey, dict[tuple[datetime, datetime] | None, int]] = {}
        self._agent_limits: dict[UsageKey, tuple[int, str]] = {}

    # -- ingestion -------------------------------------------------------------------------

    def _parse_limit_properties(self, event: pb.UsageEvent) -> tuple[int, str | None] | None:
        properties = json_format.MessageToDict(event.properties) if event.properties else {}
        if QUOTA_LIMIT_PROPERTY not in properties:
            if QUOTA_PERIOD_PROPERTY in properties:
                raise EventRejected(f"{QUOTA_PERIOD_PROPERTY} needs {QUOTA_LIMIT_PROPERTY}")
            return None
        raw_limit = properties[QUOTA_LIMIT_PROPERTY]
        if not isinstance(raw_limit, str) or not re.fullmatch(r"[0-9]+", raw_limit.strip()):
            raise EventRejected(f"{QUOTA_LIMIT_PROPERTY} must be a non-negative integer string")
        period = properties.get(QUOTA_PERIOD_PROPERTY)
        if period is not None and period not in PERIODS:
            raise EventRejected(f"{QUOTA_PERIOD_PROPERTY} must be one of {', '.join(PERIODS)}")
        return int(raw_limit), period

    def _ingest_locked(self, event: pb.UsageEvent) -> tuple[int, str]:
        """Store one event (caller holds the lock); returns (IngestStatus, error message)."""
        if not event.transaction_id:
            return pb.INGEST_STATUS_VALIDATION_ERROR, "transaction_id is required"
        if event.transaction_id in self._transaction_ids:
            return pb.INGEST_STATUS_DUPLICATE, ""
        try:
            if not event.agent_id:
                raise EventRejected("agent_id is required")
            if not event.code:
                raise EventRejected("code is required")
            if event.quantity < 0:
                raise EventRejected("quantity must not be negative")
            limit_setting = self._parse_limit_properties(event)
        except EventRejected as exc:
            return pb.INGEST_STATUS_VALIDATION_ERROR, str(exc)

        stored = pb.UsageEvent()
        stored.CopyFrom(event)
        if not stored.HasField("timestamp"):
            stored.timestamp.CopyFrom(to_timestamp(self.clock()))
        key = (stored.organization_id, stored.agent_id, stored.code)
        if limit_setting is not None:
            limit, period = limit_setting
            if period is None:
                current = self._agent_limits.get(key) or self.default_limits.get(stored.code)
                period = current[1] if current else DAILY
            self._agent_limits[key] = (limit, period)
        if stored.quantity:
            moment = from_timestamp(stored.timestamp)
            self._usage.setdefault(key, []).append((moment, stored.quantity))
            for window in self._totals.get(key, ()):
                if window is None or window[0] <= moment < window[1]:
                    self._totals[key][window] += stored.quantity
        self._transaction_ids.add(stored.transaction_id)
        self._events.append(stored)
        return pb.INGEST_STATUS_ACCEPTED, ""

    def IngestEvent(self, request, context):
        self._begin("IngestEvent", context)
        with self._lock:
            status, error = self._ingest_locked(request.event)
        return pb.IngestEventResponse(
            success=status in (pb.INGEST_STATUS_ACCEPTED, pb.INGEST_STATUS_DUPLICATE),
            status=status,
            error_message=error,
        )

    def IngestEventBatch(self, request, context):
        self._begin("IngestEventBatch", context)
        response = pb.IngestEventBatchResponse()
        failed_at: int | None = None
        with self._lock:
            for index, event in enumerate(request.events):
                if failed_at is not None:
                    status = pb.INGEST_STATUS_VALIDATION_ERROR
                    error = f"skipped: event {failed_at} failed and continue_on_error is false"
                else:
                    status, error = self._ingest_locked(event)
                if status == pb.INGEST_STATUS_ACCEPTED:
                    response.accepted_count += 1
                elif status == pb.INGEST_STATUS_DUPLICATE:
                    response.duplicate_count += 1
                else:
                    response.failed_count += 1
                    if not request.continue_on_error and failed_at is None:
                        failed_at = index
                response.results.add(index=index, status=status, error_message=error)
        return response

    # -- quotas ----------------------------------------------------------------------------

    def _quota_locked(self, key: UsageKey) -> _Quota:
        limit = self._agent_limits.get(key) or self.default_limits.get(key[2])
        if limit is None:
            return _Quota(limit=0, period=None)
        return _Quota(limit=limit[0], period=limit[1])

    def _usage_locked(self, key: UsageKey, window: tuple[datetime, datetime] | None) -> int:
        totals = self._totals.setdefault(key, {})
        if window in totals:
            return totals[window]
        entries = self._usage.get(key, ())
        if window is None:
            total = sum(quantity for _, quantity in entries)
        else:
            start, end = window
            total = sum(quantity for moment, quantity in entries if start <= moment < end)
        if len(totals) >= _WINDOWS_KEPT:  # the oldest window asked about goes
            del totals[next(iter(totals))]
        totals[window] = total
        return total

    def _quota_key(self, request, context) -> UsageKey:
        if not request.agent_id or not request.metric_code:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "agent_id and metric_code are required")
        return (request.organization_id, request.agent_id, request.metric_code)

    def CheckQuota(self, request, context):
        self._begin("CheckQuota", context)
        key = self._quota_key(request, context)
        if request.quantity < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "quantity must not be negative")
        now = self.clock()
        with self._lock:
            quota = self._quota_locked(key)
            if quota.period is None:
                usage = self._usage_locked(key, None)
                return pb.CheckQuotaResponse(allowed=True, current_usage=usage, limit=0)
            usage = self._usage_locked(key, period_window(quota.period, now))
        allowed = usage + request.quantity <= quota.limit
        return pb.CheckQuotaResponse(
            allowed=allowed,
            current_usage=usage,
            limit=quota.limit,
            remaining=max(quota.limit - usage, 0),
            denial_reason=""
            if allowed
            else (
                f"{request.metric_code} quota exceeded: {usage} of {quota.limit} used "
                f"this {_PERIOD_NOUN[quota.period]}, {request.quantity} requested"
            ),
        )

    def GetQuotaStatus(self, request, context):
        self._begin("GetQuotaStatus", context)
        key = self._quota_key(request, context)
        now = self.clock()
        with self._lock:
            quota = self._quota_locked(key)
            if quota.period is None:
                usage = self._usage_locked(key, None)
                return pb.GetQuotaStatusResponse(
                    metric_code=request.metric_code,
                    current_usage=usage,
                    period=pb.QUOTA_PERIOD_UNSPECIFIED,
                )
            start, end = period_window(quota.period, now)
            usage = self._usage_locked(key, (start, end))
        percentage = 100.0 * usage / quota.limit if quota.limit else 100.0
        return pb.GetQuotaStatusResponse(
            metric_code=request.metric_code,
            limit=quota.limit,
            current_usage=usage,
            remaining=max(quota.limit - usage, 0),
            usage_percentage=percentage,
            period=_PERIOD_TO_PROTO[quota.period],
            period_start=to_timestamp(start),
            period_end=to_timestamp(end),
        )

    # -- streaming -------------------------------------------------------------------------

    def StreamEvents(self, request, context) -> Iterator[pb.UsageEvent]:
        self._begin("StreamEvents", context)
        event_types = set(request.event_types)
        metric_codes = set(request.metric_codes)
        since = from_timestamp(request.since) if request.HasField("since") else None
        with self._lock:
            snapshot = list(self._events)
        for event in snapshot:
            if request.organization_id and event.organization_id != request.organization_id:
                continue
            if event_types and event.event_type not in event_types:
                continue
            if metric_codes and event.code not in metric_codes:
                continue
            if since is not None and from_timestamp(event.timestamp) < since:
                continue
            yield event
