"""Outbox delivery: pending usage rows sent to the metering service with ``IngestEventBatch``.

The metering service ignores a ``transaction_id`` it already has, so a retry after a lost
answer never double counts, and an outage only delays delivery.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from grpc_clients import metering as metering_api
from grpc_clients.errors import GrpcClientError, ServiceUnavailable
from grpc_clients.registry import get_metering_client
from metering.choices import MetricCode
from metering.models import DeliveryState, UsageEvent
from metering.periods import period_window
from metering.services.quotas import (
    QUOTA_PERIODS,
    QUOTA_WARNING_PERCENT,
    quota_warning_crossed,
    quota_warning_send,
)
from observability.metrics import BACKGROUND_ROW_FAILURES, background_row_failed

logger = logging.getLogger("trading_demo.metering")

DELIVERY_BATCH_SIZE = 100
MAX_BACKOFF_SECONDS = 60


@dataclass
class DeliveryReport:
    """What one ``usage_deliver_pending`` run did."""

    delivered: int = 0
    duplicates: int = 0
    rejected: int = 0
    retrying: int = 0
    service_unavailable: bool = False
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "retrying": self.retrying,
            "service_unavailable": self.service_unavailable,
            "error": self.error,
        }


def backoff_seconds(attempts: int) -> int:
    """Delay before the next delivery attempt: 1, 2, 4, … seconds, capped at 60."""
    return min(2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


def _to_wire(event: UsageEvent) -> metering_api.UsageEvent:
    """The event as sent; ``ValueError`` for a row no metering service could take."""
    if event.event_type not in metering_api.USAGE_EVENT_TYPES:
        raise ValueError(f"unknown event_type {event.event_type!r}")
    if not isinstance(event.properties or {}, dict):
        raise ValueError("properties must be an object")
    properties = dict(event.properties or {})
    if event.symbol:
        properties.setdefault("symbol", event.symbol)
    return metering_api.UsageEvent(
        transaction_id=event.transaction_id,
        agent_id=str(event.agent_id),
        code=event.code,
        quantity=event.quantity,
        event_type=event.event_type,
        timestamp=event.occurred_at.astimezone(UTC),
        properties=properties,
    )


def _due_events(*, now: datetime, ignore_backoff: bool, batch_size: int):
    due = UsageEvent.objects.filter(delivery_state=DeliveryState.PENDING)
    if not ignore_backoff:
        due = due.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    due = due.order_by("id")
    if connection.vendor == "postgresql":
        # Rows another deliverer holds are skipped, so no row is ever sent by two at once.
        due = due.select_for_update(skip_locked=True)
    return list(due[:batch_size])


def _postpone(events: list[UsageEvent], *, now: datetime, error: str) -> None:
    for event in events:
        event.attempts += 1
        event.next_attempt_at = now + timedelta(seconds=backoff_seconds(event.attempts))
        event.last_error = error[:2000]
    with transaction.atomic(savepoint=False):
        UsageEvent.objects.bulk_update(events, ["attempts", "next_attempt_at", "last_error"])


def _deliver_batch(events: list[UsageEvent], *, now: datetime, report: DeliveryReport) -> bool:
    """Send one batch (its rows locked by the caller); returns False when delivery must stop.

    A row that cannot even be put on the wire is parked as ``rejected`` (retrying cannot
    help), logged with its id and counted; the rest of the batch is sent."""
    wire = []
    sendable = []
    for event in events:
        try:
            wire.append(_to_wire(event))
        except Exception as exc:
            background_row_failed("outbox", event.pk)
            UsageEvent.objects.filter(pk=event.pk).update(
                delivery_state=DeliveryState.REJECTED,
                attempts=F("attempts") + 1,
                last_error=f"not sendable: {exc}"[:2000],
            )
            report.rejected += 1
        else:
            sendable.append(event)
    events = sendable
    if not events:
        return True
    try:
        result = get_metering_client().ingest_batch(wire, continue_on_error=True)
    except GrpcClientError as exc:
        _postpone(events, now=now, error=str(exc))
        report.retrying += len(events)
        report.service_unavailable = isinstance(exc, ServiceUnavailable)
        report.error = str(exc)
        logger.warning("usage delivery postponed for %d events: %s", len(events), exc)
        return False
    retry: list[UsageEvent] = []
    for event, outcome in zip(events, result.results, strict=True):
        event.attempts += 1
        event.ingest_status = outcome.status
        event.last_error = outcome.error_message[:2000]
        if outcome.status in {"accepted", "duplicate"}:
            event.delivery_state = DeliveryState.DELIVERED
            event.delivered_at = now
            event.next_attempt_at = None
            if outcome.status == "duplicate":
                report.duplicates += 1
            else:
                report.delivered += 1
        elif outcome.status == "validation_error":
            # Retrying cannot make an invalid event valid: park it for a human to look at.
            event.delivery_state = DeliveryState.REJECTED
            report.rejected += 1
            BACKGROUND_ROW_FAILURES.labels("outbox").inc()
            logger.error(
                "metering rejected usage event %s: %s", event.transaction_id, outcome.error_message
            )
        else:
            event.next_attempt_at = now + timedelta(seconds=backoff_seconds(event.attempts))
            retry.append(event)
    report.retrying += len(retry)
    _save_outcomes(events)
    # Events the service could not take now (internal error) wait for their backoff.
    return not retry


_OUTCOME_FIELDS = (
    "ingest_status",
    "last_error",
    "delivery_state",
    "delivered_at",
    "next_attempt_at",
)


def _save_outcomes(events: list[UsageEvent]) -> None:
    """Store the batch's outcomes: one ``UPDATE … WHERE id IN (…)`` per distinct outcome.

    A batch is almost always accepted as a whole, which makes this one plain UPDATE; Django's
    ``bulk_update`` would build and send a ``CASE WHEN id = … THEN …`` per row and field
    instead, work that grows with the batch in the process that also serves the orders.
    ``attempts`` is counted up in the database (the rows are locked by the caller).
    """
    groups: dict[tuple, list] = {}
    for event in events:
        groups.setdefault(tuple(getattr(event, f) for f in _OUTCOME_FIELDS), []).append(event.pk)
    with transaction.atomic(savepoint=False):
        for values, ids in groups.items():
            UsageEvent.objects.filter(pk__in=ids).update(
                attempts=F("attempts") + 1, **dict(zip(_OUTCOME_FIELDS, values, strict=True))
            )


@dataclass
class _KnownApiCalls:
    """An agent's ``api_calls`` usage as the deliverer last knew it (period, used, limit)."""

    period_start: datetime
    used: int
    limit: int
    asked_at: float


# Per process: only the leader delivers, so in practice only the leader's memory is used.
_known_api_calls: dict[str, _KnownApiCalls] = {}
# How long a known usage is trusted without asking the metering service again.
API_CALLS_STATUS_MAX_AGE_SECONDS = 60.0


def _warn_crossed_api_call_quotas(events: list[UsageEvent], *, now: datetime) -> None:
    """Publish ``quota.warning`` for agents whose delivered API calls crossed 80 %.

    API calls are not checked before they happen (that would cost a CheckQuota per request),
    so their quota is watched here. Asking ``GetQuotaStatus`` for every agent of every
    delivered batch would add a gRPC call per agent and batch, as many as the orders when
    batches are small; instead the deliverer remembers each agent's usage as of its last
    answer, adds what it delivered since, and asks again only when that reaches the warning
    threshold, the period changed, an event set a new limit (``quota_limit``), or the answer
    is older than ``API_CALLS_STATUS_MAX_AGE_SECONDS`` (usage recorded by anyone else shows up
    then).
    The warning is published once, when an answer first shows the threshold crossed since the
    usage last known. Trade executions are warned about by ``quota_check``, before the trade.
    """
    period_start, period_end = period_window(QUOTA_PERIODS[MetricCode.API_CALLS], now)
    added: dict[Any, int] = {}
    reconfigured: set[str] = set()
    for event in events:
        if (
            event.code == MetricCode.API_CALLS
            and event.ingest_status == "accepted"
            and period_start <= event.occurred_at < period_end
        ):
            added[event.agent_id] = added.get(event.agent_id, 0) + event.quantity
            if "quota_limit" in (event.properties or {}):
                reconfigured.add(str(event.agent_id))
    clock = time.monotonic()
    for agent_id, quantity in added.items():
        known = _known_api_calls.get(str(agent_id))
        if (
            known is not None
            and str(agent_id) not in reconfigured
            and known.period_start == period_start
            and clock - known.asked_at < API_CALLS_STATUS_MAX_AGE_SECONDS
        ):
            if known.limit <= 0 or (known.used + quantity) * 100 < (
                QUOTA_WARNING_PERCENT * known.limit
            ):
                known.used += quantity
                continue
            used_before = known.used
        else:
            used_before = None
        try:
            status = get_metering_client().get_quota_status(
                agent_id=str(agent_id), metric_code=MetricCode.API_CALLS
            )
        except GrpcClientError as exc:
            logger.info("no api_calls quota status for %s: %s", agent_id, exc)
            continue
        used = status.current_usage
        _known_api_calls[str(agent_id)] = _KnownApiCalls(
            period_start=period_start, used=used, limit=status.limit, asked_at=clock
        )
        if used_before is None:
            used_before = used - quantity
        if quota_warning_crossed(used_before, used, status.limit):
            quota_warning_send(
                agent_id=agent_id, metric_code=MetricCode.API_CALLS, used=used, limit=status.limit
            )


def usage_deliver_pending(
    *,
    limit: int = 500,
    batch_size: int = DELIVERY_BATCH_SIZE,
    now: datetime | None = None,
    ignore_backoff: bool = False,
) -> dict[str, Any]:
    """Deliver up to ``limit`` pending outbox rows to the metering service, oldest first.

    Guarantees: each row is sent in id order within ``IngestEventBatch`` batches; on PostgreSQL
    while its row is locked (``SELECT … FOR UPDATE SKIP LOCKED``), so two deliverers never send
    the same row at once (on SQLite they may, and the second is answered ``duplicate``);
    accepted and duplicate answers mark it delivered, validation errors mark it rejected,
    anything else leaves it pending with
    ``attempts + 1`` and an exponential ``next_attempt_at`` (capped at 60 s). Delivery stops at
    the first failed batch. API calls whose delivery makes usage cross 80 % of the quota
    publish ``quota.warning``. ``ignore_backoff`` sends rows whose retry time has not come yet.
    Returns a report: delivered, duplicates, rejected, retrying, service_unavailable, error,
    remaining (rows still pending).
    """
    now = now or timezone.now()
    report = DeliveryReport()
    handled = 0
    # PostgreSQL: a batch's rows stay locked (FOR UPDATE SKIP LOCKED) while they are sent, so
    # concurrent deliverers never send the same row. SQLite has one writer at a time, taken at
    # BEGIN (IMMEDIATE): holding it through IngestEventBatch stalled every order of the process
    # for the call, up to the gRPC deadline with a slow metering service. There a batch is read
    # and sent outside a transaction and its outcomes saved in a short one; a row that two
    # deliverers send (the server's job and the deliver_usage command) is answered `duplicate`
    # by the metering service, and marked delivered.
    lock_rows = connection.vendor == "postgresql"
    while handled < limit:
        with transaction.atomic() if lock_rows else contextlib.nullcontext():
            events = _due_events(
                now=now, ignore_backoff=ignore_backoff, batch_size=min(batch_size, limit - handled)
            )
            if not events:
                break
            handled += len(events)
            carry_on = _deliver_batch(events, now=now, report=report)
        _warn_crossed_api_call_quotas(events, now=now)
        if not carry_on:
            break
    result = report.as_dict()
    result["remaining"] = UsageEvent.objects.filter(delivery_state=DeliveryState.PENDING).count()
    return result
