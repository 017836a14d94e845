"""Gauges of the shared state (approval queue, outbox backlog, trades by status), computed
from the database at scrape time, so every process reports the same deployment-wide values.

It reads the tables of several apps, so it is registered by the ``/metrics`` view and
imported by nothing the apps import.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger("trading_demo.metrics")


class DomainStateCollector(Collector):
    """Scrape-time gauges from cheap aggregate queries; a failing query never fails a scrape.

    ``trading_domain_metrics_up`` is 0 when the database could not be read, in which case the
    other families are exposed without samples.
    """

    def describe(self):
        # Describing without querying keeps registration (at import) away from the database.
        return [family for family, _ in self._families()]

    @staticmethod
    def _families():
        return [
            (
                GaugeMetricFamily(
                    "trading_approval_queue_depth", "Approval requests waiting for a decision."
                ),
                "queue_depth",
            ),
            (
                GaugeMetricFamily(
                    "trading_approval_oldest_pending_age_seconds",
                    "Age of the oldest approval request still pending (0 when none is).",
                ),
                "oldest_pending_age",
            ),
            (
                GaugeMetricFamily(
                    "trading_outbox_backlog", "Usage events not yet delivered to metering."
                ),
                "outbox_backlog",
            ),
            (
                GaugeMetricFamily(
                    "trading_outbox_oldest_pending_age_seconds",
                    "Age of the oldest usage event not yet delivered (0 when none is).",
                ),
                "outbox_oldest_age",
            ),
            (
                GaugeMetricFamily(
                    "trading_trades_by_status",
                    "Trades currently in each status (from the database).",
                    labels=["status"],
                ),
                "trades_by_status",
            ),
            (
                GaugeMetricFamily(
                    "trading_domain_metrics_up",
                    "1 when the scrape-time database gauges could be computed.",
                ),
                "up",
            ),
        ]

    def collect(self):
        families = self._families()
        try:
            values = _domain_state()
        except Exception:
            logger.warning("scrape-time domain metrics unavailable", exc_info=True)
            values = {"up": 0}
        else:
            values["up"] = 1
        for family, key in families:
            value = values.get(key)
            if value is None:
                pass
            elif isinstance(value, dict):
                for label, number in sorted(value.items()):
                    family.add_metric([label], number)
            else:
                family.add_metric([], value)
            yield family


def _age_seconds(oldest, now) -> float:
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


def _domain_state() -> dict:
    from django.db.models import Count, Min
    from django.utils import timezone

    from metering.models import DeliveryState, UsageEvent
    from oversight.choices import RequestStatus
    from oversight.models import ApprovalRequest
    from trades.choices import TradeStatus
    from trades.models import Trade

    now = timezone.now()
    pending = ApprovalRequest.objects.filter(status=RequestStatus.PENDING).aggregate(
        depth=Count("pk"), oldest=Min("created_at")
    )
    outbox = UsageEvent.objects.filter(delivery_state=DeliveryState.PENDING).aggregate(
        backlog=Count("pk"), oldest=Min("occurred_at")
    )
    trades = dict.fromkeys(TradeStatus.values, 0)
    for row in Trade.objects.order_by().values("status").annotate(n=Count("pk")):
        trades[row["status"]] = row["n"]
    return {
        "queue_depth": pending["depth"],
        "oldest_pending_age": _age_seconds(pending["oldest"], now),
        "outbox_backlog": outbox["backlog"],
        "outbox_oldest_age": _age_seconds(outbox["oldest"], now),
        "trades_by_status": trades,
    }


_registered = threading.Lock()
_collector: DomainStateCollector | None = None


def register_domain_collector() -> DomainStateCollector:
    """Register the scrape-time collector in the default registry, once per process."""
    global _collector
    with _registered:
        if _collector is None:
            _collector = DomainStateCollector()
            REGISTRY.register(_collector)
        return _collector
