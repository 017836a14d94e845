"""Quotas: what an agent may still use, counting the usage still waiting in the outbox.

The metering service knows only delivered usage; ``pending_usage`` adds what is recorded and
not yet sent, so an outage of the delivery never lets an agent exceed its quota.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.db.models import BigIntegerField, F, OuterRef, QuerySet, Subquery, Sum, Value
from django.utils import timezone

from api import problems
from grpc_clients import metering as metering_api
from grpc_clients.errors import GrpcClientError, ServiceUnavailable
from grpc_clients.registry import get_metering_client
from metering.choices import MetricCode
from metering.models import DeliveryState, UsageEvent
from metering.periods import DAILY, PERIOD_UNITS, period_window
from metering.services.recording import server_transaction_id, usage_record
from metering.signals import quota_warning

if TYPE_CHECKING:
    from agents.models import Agent

logger = logging.getLogger("trading_demo.metering")

# The period of each quota this server configures (api_calls by the service's default,
# trade_executions by quota_configure). Undelivered usage is counted over this window.
QUOTA_PERIODS = {MetricCode.API_CALLS: DAILY, MetricCode.TRADE_EXECUTIONS: DAILY}
QUOTA_WARNING_PERCENT = 80
# A sum of usage quantities is taken as two sums, of each quantity's part above and below
# 2**32, added up in Python: neither can overflow a 64-bit integer before 2**31 events,
# whatever their quantities. SQLite's SUM raises on an overflow (PostgreSQL's widens to
# numeric), and the usage of an agent that did would answer 500 and its orders 503.
SUM_SPLIT = 2**32
# The largest quantity a CheckQuota request carries (int64): a larger one is over any limit.
MAX_WIRE_QUANTITY = 2**63 - 1
# Quota hints sent in one IngestEventBatch call (quota_configure_all).
QUOTA_HINT_BATCH = 500


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


class Literal(Value):
    """A constant written into the statement's text instead of being sent as a parameter.

    PostgreSQL binds this server's parameters itself and prepares each statement once per
    connection (``config.settings``); a prepared statement may then be planned once for any
    parameter value, and such a plan can use a partial index only when the index's condition is
    written in the statement. The value is quoted on the client by the driver
    (``connection.ops.compose_sql``). Other databases plan with the bound value.
    """

    def as_postgresql(self, compiler, connection):
        sql, params = self.as_sql(compiler, connection)
        # The statement still travels with parameters: a % in the literal stays a %.
        return connection.ops.compose_sql(sql, params).replace("%", "%%"), ()


def _pending(*, agent_id, metric_code: str, since: datetime | None) -> QuerySet[UsageEvent]:
    """The agent's rows of ``metric_code`` since ``since`` still in the outbox, written so that
    PostgreSQL reads them through the partial index ``usage_pending_by_agent`` (the pending
    state is a ``Literal``: the index's condition is in the statement even when a prepared
    statement is planned once for any parameter value)."""
    pending = UsageEvent.objects.filter(
        agent_id=agent_id,
        code=metric_code,
        delivery_state=Literal(DeliveryState.PENDING.value),
    )
    if since is not None:
        pending = pending.filter(occurred_at__gte=since)
    return pending


def pending_usage(*, agent_id, metric_code: str, since: datetime | None) -> int:
    """Quantity of ``metric_code`` recorded for the agent since ``since`` and not yet delivered.

    It reads the partial index ``usage_pending_by_agent``, which holds only the rows still in
    the outbox, so its cost does not grow with the agent's delivered usage
    (docs/performance.md). An order reads the same sum with the agent's row instead
    (``pending_usage_annotations``).
    """
    pending = _pending(agent_id=agent_id, metric_code=metric_code, since=since)
    if connections[pending.db].vendor == "postgresql":
        # PostgreSQL sums a bigint column as a numeric, exact at any size: one SUM, which
        # the ORM builds at a fraction of the split sums' cost (only SQLite needs those).
        return int(pending.aggregate(total=Sum("quantity"))["total"] or 0)
    return usage_sum_total(pending.aggregate(**usage_sums()))


PENDING_USAGE = "pending_usage"


def pending_usage_annotations(*, metric_code: str, since: datetime | None) -> dict[str, Subquery]:
    """Annotations of an agent queryset (``queryset.annotate(**...)``) with ``pending_usage``'s
    sum for each agent, as subqueries over ``OuterRef("pk")``: the agent and its undelivered
    usage in one statement. Read the sum with ``pending_usage_annotated``.

    The subquery reads the partial index ``usage_pending_by_agent`` as ``pending_usage`` does.
    On PostgreSQL it is one ``SUM`` (numeric there, exact at any size); elsewhere two, of
    each quantity's part above and below ``SUM_SPLIT`` (``usage_sums``), so that the sum is
    exact and never overflows.
    """
    pending = _pending(agent_id=OuterRef("pk"), metric_code=metric_code, since=since)
    # One group per agent (the outer row's), the model's ordering dropped: one row, one sum.
    grouped = pending.order_by().values("agent_id")
    if connections[pending.db].vendor == "postgresql":
        sums = {PENDING_USAGE: Sum("quantity", output_field=BigIntegerField())}
    else:
        sums = {f"{PENDING_USAGE}_{name}": total for name, total in usage_sums().items()}
    return {
        name: Subquery(
            grouped.annotate(total=total).values("total"), output_field=total.output_field
        )
        for name, total in sums.items()
    }


def quota_window(metric_code: str, now: datetime) -> tuple[datetime, datetime]:
    """Start and end of the period of ``metric_code``'s quota at ``now``: ``quota_check``
    counts the usage still in the outbox since the start."""
    return period_window(QUOTA_PERIODS.get(metric_code, DAILY), now)


def pending_usage_annotated(obj) -> int:
    """The sum of an object read with ``pending_usage_annotations`` (0 when nothing is
    pending)."""
    if hasattr(obj, PENDING_USAGE):
        return int(getattr(obj, PENDING_USAGE) or 0)
    return usage_sum_total(
        {name: getattr(obj, f"{PENDING_USAGE}_{name}") for name in ("sum_high", "sum_low")}
    )


def quota_warning_crossed(used_before: int, used_after: int, limit: int) -> bool:
    """Whether usage going from ``used_before`` to ``used_after`` crosses the warning level."""
    threshold = QUOTA_WARNING_PERCENT * limit
    return limit > 0 and used_before * 100 < threshold <= used_after * 100


def quota_warning_data(*, metric_code: str, used: int, limit: int) -> dict:
    """The payload of a ``quota.warning`` event."""
    return {
        "metric_code": metric_code,
        "used": used,
        "limit": limit,
        "usage_percentage": round(100.0 * used / limit, 2),
    }


def quota_warning_send(*, agent_id, metric_code: str, used: int, limit: int) -> None:
    """Announce a crossed warning level found outside an order's transaction
    (``metering.signals.quota_warning``)."""
    quota_warning.send(
        sender=UsageEvent,
        agent_id=agent_id,
        data=quota_warning_data(metric_code=metric_code, used=used, limit=limit),
    )


def quota_refusal_key(agent_id) -> str:
    """The cache key of the agent's latest ``quota_refusal_note``."""
    return f"metering:quota-refused:{agent_id}"


def quota_refusal_note(
    *,
    agent_id,
    metric_code: str,
    limit: int,
    used: int,
    period: str,
    refused_at: datetime,
    resets_at: datetime,
) -> None:
    """Keep the metering service's latest quota refusal of the agent until its period ends
    (read by ``metering.selectors.quota_refusals_for``), and announce the first one of the
    period as a ``quota.warning`` with ``refused`` true (``metering.signals.quota_warning``).

    The refusal itself is the 429 the client gets; this is what lets a person see it (a bot
    that backs off until the quota resets otherwise just goes quiet). The note is kept in
    the cache (shared by every process whenever there is more than one: Redis), not the
    database: one write per refusal, gone on its own when the quota resets; a cache that lost
    it loses a notice, never a control. The announcement locks the agent's row to number its
    event, so it is sent once per metric and period, not for every refused request.
    """
    key = quota_refusal_key(agent_id)
    previous = cache.get(key)
    note = {
        "metric_code": metric_code,
        "limit": limit,
        "used": used,
        "period": period,
        "refused_at": refused_at.isoformat(),
        "resets_at": resets_at.isoformat(),
    }
    timeout = max(math.ceil((resets_at - refused_at).total_seconds()), 1)
    cache.set(key, note, timeout=timeout)
    if previous is not None and (previous["metric_code"], previous["resets_at"]) == (
        metric_code,
        note["resets_at"],
    ):
        return
    # A limit of 0 is a real zero quota: all of it is used.
    usage = quota_warning_data(metric_code=metric_code, used=used, limit=limit) if limit else {}
    quota_warning.send(
        sender=UsageEvent,
        agent_id=agent_id,
        data={"usage_percentage": 100.0, **usage, **note, "refused": True},
    )


def quota_check(
    *,
    agent: Agent,
    metric_code: str,
    quantity: int = 1,
    now: datetime | None = None,
    warn: bool = True,
    pending: int | None = None,
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
    caller that asks before its transaction and publishes in it. ``pending`` is the agent's
    usage still in the outbox since the start of ``quota_window(metric_code, now)``, when the
    caller read it with the agent (``pending_usage_annotations``); otherwise it is read here.
    """
    now = now or timezone.now()
    period = QUOTA_PERIODS.get(metric_code, DAILY)
    period_start, period_end = quota_window(metric_code, now)
    if pending is None:
        pending = pending_usage(agent_id=agent.pk, metric_code=metric_code, since=period_start)
    undelivered = pending
    decision = get_metering_client().check_quota(
        agent_id=str(agent.pk),
        metric_code=metric_code,
        quantity=min(quantity + undelivered, MAX_WIRE_QUANTITY),
    )
    used_before = decision.current_usage + undelivered
    remaining = max(decision.limit - used_before, 0) if decision.limit else 0
    if not decision.allowed:
        retry_after = max(int((period_end - now).total_seconds()) + 1, 1)
        quota_refusal_note(
            agent_id=agent.pk,
            metric_code=metric_code,
            limit=decision.limit,
            used=used_before,
            period=period,
            refused_at=now,
            resets_at=period_end,
        )
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
    transaction, which holds the agent's row locked), or else through
    ``metering.signals.quota_warning``, whose receiver publishes it in a transaction of its
    own (a savepoint of the caller's, when there is one)."""
    used_after = decision.current_usage + quantity
    if not quota_warning_crossed(decision.current_usage, used_after, decision.limit):
        return
    if events is not None:
        data = quota_warning_data(metric_code=metric_code, used=used_after, limit=decision.limit)
        events.publish(event="quota.warning", channel="portfolio", data=data)
    else:
        quota_warning_send(
            agent_id=agent.pk, metric_code=metric_code, used=used_after, limit=decision.limit
        )


def quota_configure(*, agent: Agent) -> None:
    """Hint to the reference metering service: its ``trade_executions`` quota for the agent
    is the agent's ``daily_trade_limit`` per day.

    Optional (``METERING_QUOTA_HINTS``) and nothing depends on it: the server enforces
    ``daily_trade_limit`` itself (``trades.services.daily_trade_count``); the hint only
    keeps the reference service's own quota, and what ``GET /metering/agents/{id}/quota``
    reports of it, in line. It is a quantity-0 event with the ``quota_limit`` property, a
    convention of the reference service that a standard ``creto.metering.v1`` service ignores
    and that the reference service forgets when it restarts (the server sends them all again
    when it starts one embedded: ``agents.services.agent_quota_hints_resend``). Sent at once;
    if the metering service is unreachable it goes to the outbox and is delivered, in order,
    before any later usage; nothing raises.
    """
    quota_configure_all(agents=[agent])


def quota_configure_all(*, agents: Iterable[Agent]) -> int:
    """``quota_configure`` for each of ``agents``, in batches of ``QUOTA_HINT_BATCH`` events.

    Each batch is one ``IngestEventBatch`` call within the gRPC deadline: once one finds the
    metering service unavailable, that batch and the rest go to the outbox without another
    call, so this never waits longer than one deadline for a service that does not answer. A
    refused batch is logged and not retried (the hint is optional). Returns how many hints
    were sent or queued (0 when ``METERING_QUOTA_HINTS`` is off); nothing raises.
    """
    if not settings.METERING_QUOTA_HINTS:
        return 0
    hints = [_quota_hint(agent) for agent in agents]
    for offset in range(0, len(hints), QUOTA_HINT_BATCH):
        batch = hints[offset : offset + QUOTA_HINT_BATCH]
        try:
            result = get_metering_client().ingest_batch([event for event, _ in batch])
        except ServiceUnavailable:
            logger.warning(
                "metering unavailable; %d quota configs queued in the outbox",
                len(hints) - offset,
            )
            for event, agent in hints[offset:]:
                usage_record(
                    agent=agent,
                    code=event.code,
                    quantity=0,
                    event_type=event.event_type,
                    properties=event.properties,
                    transaction_id=event.transaction_id,
                )
            break
        except GrpcClientError as exc:
            logger.error("metering refused %d quota configs: %s", len(batch), exc.code)
            continue
        for (_, agent), outcome in zip(batch, result.results, strict=True):
            if outcome.status not in {"accepted", "duplicate"}:
                logger.error(
                    "metering refused quota config for %s: %s", agent.pk, outcome.error_message
                )
    return len(hints)


def _quota_hint(agent: Agent) -> tuple[metering_api.UsageEvent, Agent]:
    """The quantity-0 event that sets the agent's ``trade_executions`` quota, and its agent."""
    limit = int(agent.effective_config["daily_trade_limit"])
    event = metering_api.UsageEvent(
        transaction_id=server_transaction_id("quota-config", uuid.uuid4().hex),
        agent_id=str(agent.pk),
        code=MetricCode.TRADE_EXECUTIONS,
        quantity=0,
        event_type="api_call",
        properties={"quota_limit": str(limit), "quota_period": DAILY},
    )
    return event, agent
