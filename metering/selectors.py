"""Metering reads: usage from the local ledger, quota figures from the metering service."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.db.models import Count
from django.utils import timezone

from grpc_clients.registry import get_metering_client
from metering.choices import MetricCode
from metering.models import DeliveryState, UsageEvent
from metering.periods import period_window
from metering.services import pending_usage, quota_refusal_key, usage_sum_total, usage_sums

if TYPE_CHECKING:
    from agents.models import Agent

QUOTA_METRICS = (MetricCode.API_CALLS, MetricCode.TRADE_EXECUTIONS)


def usage_summary(*, agent: Agent, period: str, now: datetime | None = None) -> dict[str, Any]:
    """The agent's usage in the current ``period`` (daily, weekly, monthly) from the ledger.

    Counts delivered and not-yet-delivered events alike (the ledger is the truth of what was
    done); events the metering service rejected as invalid are left out. ``by_event_type``
    counts events per Creto event type (an order is an ``api_call`` event of code
    ``trade_executions``); ``by_metric_code`` sums the quantities per metric code, the figures
    the top-level numbers and the quotas use; ``by_symbol`` gives trades and volume per symbol.
    """
    start, end = period_window(period, now or timezone.now())
    events = UsageEvent.objects.filter(
        agent=agent, occurred_at__gte=start, occurred_at__lt=end
    ).exclude(delivery_state=DeliveryState.REJECTED)
    totals = {
        row["code"]: usage_sum_total(row)
        for row in events.values("code").annotate(**usage_sums()).order_by()
    }
    by_event_type = {
        row["event_type"]: row["events"]
        for row in events.values("event_type").annotate(events=Count("id")).order_by("event_type")
    }
    by_symbol: dict[str, dict[str, int]] = {}
    symbol_rows = (
        events.exclude(symbol="")
        .filter(code__in=[MetricCode.TRADE_EXECUTIONS, MetricCode.TRADE_VOLUME])
        .values("symbol", "code")
        .annotate(**usage_sums())
        .order_by("symbol", "code")
    )
    for row in symbol_rows:
        entry = by_symbol.setdefault(row["symbol"], {"trades": 0, "trade_volume": 0})
        key = "trades" if row["code"] == MetricCode.TRADE_EXECUTIONS else "trade_volume"
        entry[key] = usage_sum_total(row)
    return {
        "agent_id": agent.pk,
        "period": period,
        "period_start": start,
        "period_end": end,
        "api_calls": totals.get(MetricCode.API_CALLS, 0),
        "trades": totals.get(MetricCode.TRADE_EXECUTIONS, 0),
        "trade_volume": totals.get(MetricCode.TRADE_VOLUME, 0),
        "oversight_requests": totals.get(MetricCode.OVERSIGHT_REQUESTS, 0),
        "breakdown": {
            "by_metric_code": dict(sorted(totals.items())),
            "by_event_type": by_event_type,
            "by_symbol": by_symbol,
        },
    }


def quota_status_for(*, agent: Agent, metric_codes=QUOTA_METRICS) -> dict[str, Any]:
    """The agent's quotas from ``GetQuotaStatus``, plus usage still waiting in the outbox.

    ``used`` includes undelivered usage of the quota's window, as ``quota_check`` counts it.
    A ``grpc_clients.errors.ServiceUnavailable`` propagates (503).
    """
    client = get_metering_client()
    quotas = []
    for code in metric_codes:
        status = client.get_quota_status(agent_id=str(agent.pk), metric_code=code)
        # No window (an unlimited metric): the service reports usage of all time.
        undelivered = pending_usage(agent_id=agent.pk, metric_code=code, since=status.period_start)
        used = status.current_usage + undelivered
        if status.limit:
            remaining = max(status.limit - used, 0)
            percentage = round(100.0 * used / status.limit, 2)
        else:
            remaining, percentage = 0, 0.0
        quotas.append(
            {
                "metric_code": code,
                "limit": status.limit,
                "used": used,
                "remaining": remaining,
                "usage_percentage": percentage,
                "period": status.period,
                "period_start": status.period_start,
                "period_end": status.period_end,
            }
        )
    return {"agent_id": agent.pk, "quotas": quotas}


def quota_refusals_for(*, agent_ids) -> dict[Any, dict[str, Any]]:
    """The metering service's latest quota refusal of each agent whose quota period has not
    ended since (``metering.services.quota_refusal_note``): ``{metric_code, limit, used,
    period, refused_at, resets_at}`` by agent id; an agent not refused is absent."""
    keys = {quota_refusal_key(agent_id): agent_id for agent_id in agent_ids}
    found = cache.get_many(list(keys))
    return {keys[key]: note for key, note in found.items()}
