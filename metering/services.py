"""Metering writes: the usage outbox, its delivery to the metering service, and quota checks.

Every usage event is first a ``UsageEvent`` row written in the transaction of the business
change it meters (an order, a fill, an approval request, an API call), so usage exists exactly
when the change does. ``usage_deliver_pending`` then sends the rows with ``IngestEventBatch``;
the metering service ignores a ``transaction_id`` it already has, so a retry after a lost
answer never double counts, and an outage only delays delivery.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import BigIntegerField, F, Q, Sum, Value
from django.utils import timezone

from api import problems
from grpc_clients import metering as metering_api
from grpc_clients.errors import GrpcClientError, ServiceUnavailable
from grpc_clients.registry import get_metering_client
from metering.choices import MetricCode
from metering.models import DeliveryState, UsageEvent
from metering.periods import DAILY, PERIOD_UNITS, period_window
from observability.metrics import BACKGROUND_ROW_FAILURES, background_row_failed

if TYPE_CHECKING:
    from agents.models import Agent

logger = logging.getLogger("trading_demo.metering")

# The period of each quota this server configures (api_calls by the service's default,
# trade_executions by quota_configure). Undelivered usage is counted over this window.
QUOTA_PERIODS = {MetricCode.API_CALLS: DAILY, MetricCode.TRADE_EXECUTIONS: DAILY}
QUOTA_WARNING_PERCENT = 80
# Properties that configure quotas on the metering service: only the server may send them.
RESERVED_PROPERTIES = frozenset({"quota_limit", "quota_period"})
DELIVERY_BATCH_SIZE = 100
MAX_BACKOFF_SECONDS = 60


# --- recording ---------------------------------------------------------------------------------


def _whole_quantity(quantity: int | Decimal) -> int:
    """Usage quantities are whole units (trade_volume in whole dollars, rounded half up)."""
    if isinstance(quantity, Decimal):
        return int(quantity.to_integral_value(rounding=ROUND_HALF_UP))
    return int(quantity)


def server_transaction_id(*parts: object) -> str:
    """The outbox id of one of the server's own usage events: ``server:`` and ``parts``.

    A client's ids are stored as ``client:<agent id>:<id>`` (``client_transaction_id``), so no
    request can write an id of this form: derived from a row the business change creates
    (a trade id) or fresh (``uuid4``), it cannot meet another row's, and the server's writes
    to the outbox never fail on a duplicate id.
    """
    return ":".join(["server", *(str(part) for part in parts)])


def client_transaction_id(*, agent_id, client_id: str) -> str:
    """The outbox (and wire) id of a client's usage event: scoped to its agent, so that two
    tenants' ids never meet at the metering service, and never of the server's form."""
    return f"client:{agent_id}:{client_id}"


def usage_record(
    *,
    agent: Agent,
    code: str,
    quantity: int | Decimal,
    event_type: str = "api_call",
    symbol: str = "",
    properties: dict[str, Any] | None = None,
    transaction_id: str | None = None,
    occurred_at: datetime | None = None,
) -> UsageEvent:
    """Write one of the server's usage events to the outbox, inside the caller's transaction.

    The row commits or rolls back with the business change that caused it, and is delivered
    later by ``usage_deliver_pending``. ``event_type`` must be a lower-case Creto
    ``UsageEventType`` name; ``quantity`` must not be negative (a ``Decimal`` is rounded to
    whole units). ``transaction_id`` is a ``server_transaction_id`` (a fresh one by default):
    no other row can hold it, so the insert cannot fail the caller's transaction on it.
    """
    event = usage_build(
        agent=agent,
        code=code,
        quantity=quantity,
        event_type=event_type,
        symbol=symbol,
        properties=properties,
        transaction_id=transaction_id,
        occurred_at=occurred_at,
    )
    # Skipping the lookups (the agent is a loaded row) keeps the hot path to one INSERT.
    event.save(force_insert=True)
    return event


def usage_build(
    *,
    agent: Agent,
    code: str,
    quantity: int | Decimal,
    event_type: str = "api_call",
    symbol: str = "",
    properties: dict[str, Any] | None = None,
    transaction_id: str | None = None,
    occurred_at: datetime | None = None,
) -> UsageEvent:
    """A validated, unsaved usage event: what ``usage_record`` saves, and what
    ``usage_bulk_record`` saves many of at once.

    ``event_type`` must be a lower-case Creto ``UsageEventType`` name; ``quantity`` must not be
    negative (a ``Decimal`` is rounded to whole units). The agent is not looked up again.
    """
    if event_type not in metering_api.USAGE_EVENT_TYPES:
        raise ValidationError({"event_type": [f"Unknown event type {event_type!r}."]})
    event = UsageEvent(
        transaction_id=transaction_id or server_transaction_id(uuid.uuid4().hex),
        agent=agent,
        event_type=event_type,
        code=code,
        quantity=_whole_quantity(quantity),
        symbol=symbol or "",
        properties={str(k): str(v) for k, v in (properties or {}).items()},
        occurred_at=occurred_at or timezone.now(),
    )
    if event.quantity < 0:
        raise ValidationError({"quantity": ["Quantity must not be negative."]})
    event.full_clean(exclude=["agent"], validate_unique=False, validate_constraints=False)
    return event


def usage_bulk_record(events: list[UsageEvent]) -> None:
    """Write events built by ``usage_build`` to the outbox in one INSERT, inside the caller's
    transaction. Their ``transaction_id`` values are ``server_transaction_id``s derived from a
    row created in this transaction (or fresh), which no other row can hold."""
    UsageEvent.objects.bulk_create(events)


def api_call_usage(request) -> dict:
    """``usage_build`` arguments of the ``api_calls`` event that ``request`` counts for."""
    route = getattr(getattr(request, "resolver_match", None), "route", "") or ""
    return {
        "code": MetricCode.API_CALLS,
        "quantity": 1,
        "event_type": "api_call",
        "properties": {"method": request.method, "route": route},
    }


def api_call_record(*, agent_id, request) -> UsageEvent:
    """Count one ``api_calls`` unit for an authenticated request made for an agent.

    The caller (``metering.middleware``) has established from the answer that the agent exists
    and is visible to the user; this is then a single INSERT in autocommit.
    """
    route = getattr(getattr(request, "resolver_match", None), "route", "") or ""
    event = UsageEvent(
        transaction_id=server_transaction_id(uuid.uuid4().hex),
        agent_id=agent_id,
        event_type="api_call",
        code=MetricCode.API_CALLS,
        quantity=1,
        properties={"method": request.method, "route": route},
        occurred_at=timezone.now(),
    )
    event.save(force_insert=True)
    return event


@dataclass(frozen=True)
class SubmittedUsage:
    transaction_id: str  # the client's id, as it sent it (or as it was given one)
    status: str  # "accepted" or "duplicate"
    event: UsageEvent | None


def usage_event_submit(
    *,
    agent: Agent,
    event_type: str,
    code: str,
    quantity: int,
    transaction_id: str | None = None,
    properties: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> SubmittedUsage:
    """Accept a client-reported usage event into the outbox, idempotently by transaction_id.

    The client's ``transaction_id`` (a fresh one when it sends none) is scoped to the agent:
    one already recorded *for this agent* answers ``duplicate`` and writes nothing (also when
    two identical submissions race); the same id on another agent, another tenant's included,
    is a different event and tells nothing about it. The row's outbox id is
    ``client_transaction_id(...)``, which never has the form of the server's own ids.
    Quota-configuring properties are refused: only the server sets an agent's limits.
    """
    reserved = RESERVED_PROPERTIES.intersection(properties or {})
    if reserved:
        raise ValidationError(
            {"properties": [f"Reserved properties may not be set: {', '.join(sorted(reserved))}."]}
        )
    client_id = transaction_id or uuid.uuid4().hex
    mine = UsageEvent.objects.filter(agent=agent, client_transaction_id=client_id)
    if mine.exists():
        return SubmittedUsage(client_id, "duplicate", None)
    event = usage_build(
        agent=agent,
        code=code,
        quantity=quantity,
        event_type=event_type,
        properties=properties,
        transaction_id=client_transaction_id(agent_id=agent.pk, client_id=client_id),
        occurred_at=timestamp,
    )
    event.client_transaction_id = client_id
    try:
        # A savepoint: a racing twin's row makes this insert fail, not the request.
        with transaction.atomic():
            event.save(force_insert=True)
    except IntegrityError:
        if mine.exists():
            return SubmittedUsage(client_id, "duplicate", None)
        raise
    return SubmittedUsage(client_id, "accepted", event)


# --- quotas ------------------------------------------------------------------------------------


# A sum of usage quantities is taken as two sums, of each quantity's part above and below
# 2**32, added up in Python: neither can overflow a 64-bit integer before 2**31 events,
# whatever their quantities. SQLite's SUM raises on an overflow (PostgreSQL's widens to
# numeric), and the usage of an agent that did would answer 500 and its orders 503.
SUM_SPLIT = 2**32
# The largest quantity a CheckQuota request carries (int64): a larger one is over any limit.
MAX_WIRE_QUANTITY = 2**63 - 1


def usage_sums(field: str = "quantity") -> dict[str, Sum]:
    """Aggregates of ``field`` that cannot overflow; ``usage_sum_total`` adds them up."""
    split = Value(SUM_SPLIT, output_field=BigIntegerField())
    return {
        "sum_high": Sum(F(field) / split, output_field=BigIntegerField()),
        "sum_low": Sum(F(field) % split, output_field=BigIntegerField()),
    }


def usage_sum_total(row: dict) -> int:
    """The exact sum from a row aggregated with ``usage_sums`` (0 when there were no rows)."""
    return int(row["sum_high"] or 0) * SUM_SPLIT + int(row["sum_low"] or 0)


def pending_usage(*, agent_id, metric_code: str, since: datetime | None) -> int:
    """Quantity of ``metric_code`` recorded for the agent since ``since`` and not yet delivered.

    Every order asks this before its quota check. It reads the partial index
    ``usage_pending_by_agent``, which holds only the rows still in the outbox, so its cost does
    not grow with the agent's delivered usage (docs/performance.md).
    """
    table = UsageEvent._meta.db_table
    # The state is written as a literal, not a parameter: the prepared statement's plan can
    # then use the partial index of pending rows (usage_pending_by_agent).
    # Two sums that cannot overflow (see usage_sums); %% is a literal % for the driver.
    sql = (
        f"SELECT COALESCE(SUM(quantity / {SUM_SPLIT}), 0), "  # noqa: S608 (names from the model)
        f"COALESCE(SUM(quantity %% {SUM_SPLIT}), 0) FROM {table} "
        f"WHERE agent_id = %s AND code = %s AND delivery_state = '{DeliveryState.PENDING.value}'"
    )
    params = [
        UsageEvent._meta.get_field("agent").get_db_prep_value(agent_id, connection),
        metric_code,
    ]
    if since is not None:
        sql += " AND occurred_at >= %s"
        params.append(
            UsageEvent._meta.get_field("occurred_at").get_db_prep_value(since, connection)
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        high, low = cursor.fetchone()
    return int(high) * SUM_SPLIT + int(low)


def _crossed_warning(used_before: int, used_after: int, limit: int) -> bool:
    threshold = QUOTA_WARNING_PERCENT * limit
    return limit > 0 and used_before * 100 < threshold <= used_after * 100


def quota_check(
    *,
    agent: Agent,
    metric_code: str,
    quantity: int = 1,
    now: datetime | None = None,
    warn: bool = True,
) -> metering_api.QuotaDecision:
    """Ask the metering service whether ``quantity`` more of ``metric_code`` fits the quota.

    Usage still waiting in the outbox for the current period counts as used, so an outage of
    the delivery never lets an agent exceed its quota. Raises ``problems.QuotaExceeded`` (429,
    ``limit``, ``remaining``, ``Retry-After`` = seconds until the period ends) when it does not
    fit; a ``grpc_clients.errors.ServiceUnavailable`` propagates (fail closed). When this use
    makes usage cross 80 % of the limit, publishes ``quota.warning`` on the agent's
    ``portfolio`` channel — in the caller's transaction when there is one, so a failed order
    sends no warning. Returns the decision with ``current_usage``/``remaining`` including
    undelivered usage. ``warn=False`` leaves the warning to the caller (``quota_warn``), for a
    caller that asks before its transaction and publishes in it.
    """
    now = now or timezone.now()
    period = QUOTA_PERIODS.get(metric_code, DAILY)
    period_start, period_end = period_window(period, now)
    undelivered = pending_usage(agent_id=agent.pk, metric_code=metric_code, since=period_start)
    decision = get_metering_client().check_quota(
        agent_id=str(agent.pk),
        metric_code=metric_code,
        quantity=min(quantity + undelivered, MAX_WIRE_QUANTITY),
    )
    used_before = decision.current_usage + undelivered
    remaining = max(decision.limit - used_before, 0) if decision.limit else 0
    if not decision.allowed:
        retry_after = max(int((period_end - now).total_seconds()) + 1, 1)
        raise problems.QuotaExceeded(
            f"The {metric_code} quota of {decision.limit} per {PERIOD_UNITS[period]} is "
            f"used up ({used_before} used, {quantity} requested).",
            limit=decision.limit,
            remaining=remaining,
            retry_after=retry_after,
            metric_code=metric_code,
        )
    allowed = metering_api.QuotaDecision(
        allowed=True,
        current_usage=used_before,
        limit=decision.limit,
        remaining=remaining,
        denial_reason="",
    )
    if warn:
        quota_warn(agent=agent, metric_code=metric_code, decision=allowed, quantity=quantity)
    return allowed


def quota_warn(
    *,
    agent: Agent,
    metric_code: str,
    decision: metering_api.QuotaDecision,
    quantity: int = 1,
    events=None,
) -> None:
    """Publish ``quota.warning`` if using ``quantity`` after ``decision`` crosses 80 % of the
    limit: through ``events`` (the ``realtime.services.AgentEvents`` of the caller's
    transaction, which holds the agent's row locked), or in a transaction of its own."""
    used_after = decision.current_usage + quantity
    if not _crossed_warning(decision.current_usage, used_after, decision.limit):
        return
    data = {
        "metric_code": metric_code,
        "used": used_after,
        "limit": decision.limit,
        "usage_percentage": round(100.0 * used_after / decision.limit, 2),
    }
    if events is not None:
        events.publish(event="quota.warning", channel="portfolio", data=data)
    else:
        _publish_quota_warning(
            agent_id=agent.pk, metric_code=metric_code, used=used_after, limit=decision.limit
        )


def _publish_quota_warning(*, agent_id, metric_code: str, used: int, limit: int) -> None:
    from realtime.services import publish_agent_event

    with transaction.atomic():
        publish_agent_event(
            agent_id=agent_id,
            event="quota.warning",
            channel="portfolio",
            data={
                "metric_code": metric_code,
                "used": used,
                "limit": limit,
                "usage_percentage": round(100.0 * used / limit, 2),
            },
        )


def quota_configure(*, agent: Agent) -> None:
    """Hint to the reference metering service: its ``trade_executions`` quota for the agent
    is the agent's ``daily_trade_limit`` per day.

    Optional (``METERING_QUOTA_HINTS``) and nothing depends on it: the server enforces
    ``daily_trade_limit`` itself (``trades.services.daily_trade_limit_check``); the hint only
    keeps the reference service's own quota, and what ``GET /metering/agents/{id}/quota``
    reports of it, in line. It is a quantity-0 event with the ``quota_limit`` property, a
    convention of the reference service that a standard ``creto.metering.v1`` service ignores
    and that the reference service forgets when it restarts. Sent at once; if the metering
    service is unreachable it goes to the outbox and is delivered, in order, before any later
    usage; nothing raises.
    """
    if not settings.METERING_QUOTA_HINTS:
        return
    limit = int(agent.effective_config["daily_trade_limit"])
    config_event = {
        "agent": agent,
        "code": MetricCode.TRADE_EXECUTIONS,
        "quantity": 0,
        "event_type": "api_call",
        "properties": {"quota_limit": str(limit), "quota_period": DAILY},
    }
    transaction_id = server_transaction_id("quota-config", uuid.uuid4().hex)
    try:
        result = get_metering_client().ingest_event(
            metering_api.UsageEvent(
                transaction_id=transaction_id,
                agent_id=str(agent.pk),
                code=config_event["code"],
                quantity=0,
                event_type="api_call",
                properties=config_event["properties"],
            )
        )
    except ServiceUnavailable:
        logger.warning("metering unavailable; quota config for %s queued in the outbox", agent.pk)
        usage_record(transaction_id=transaction_id, **config_event)
        return
    if result.status not in {"accepted", "duplicate"}:
        logger.error("metering refused quota config for %s: %s", agent.pk, result.error_message)


# --- delivery ----------------------------------------------------------------------------------


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
    ``bulk_update`` would build a ``CASE WHEN id = … THEN …`` per row and field instead, which
    cost the serving process more CPU than the deliveries themselves. ``attempts`` is counted
    up in the database (the rows are locked by the caller).
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
    delivered batch cost about one call per order under load; instead the deliverer remembers
    each agent's usage as of its last answer, adds what it delivered since, and asks again
    only when that reaches the warning threshold, the period changed, an event set a new limit
    (``quota_limit``), or the answer is older than ``API_CALLS_STATUS_MAX_AGE_SECONDS`` (usage
    recorded by anyone else shows up then).
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
        if _crossed_warning(used_before, used, status.limit):
            _publish_quota_warning(
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
