"""Service endpoints of every process: liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.representation import utc_text
from grpc_clients.health import check_health
from observability.domain_state import register_domain_collector


@require_GET
def health_live(request):
    """Liveness: the process answers HTTP. Checks nothing else on purpose."""
    return JsonResponse({"status": "ok", "timestamp": utc_text()})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "not configured"

    async def probe():
        await asyncio.wait_for(layer.group_send("health-probe", {"type": "health.probe"}), 1.0)

    async_to_sync(probe)()
    return "ok"


def _check_grpc(address: str, service: str) -> str:
    timeout = min(settings.GRPC_TIMEOUT_SECONDS, 1.0)
    return "ok" if check_health(address, service, timeout=timeout) else "unavailable"


def _guard(check, *args) -> str:
    try:
        return check(*args)
    except Exception:  # a readiness probe reports failures, it never raises
        return "unavailable"


_probe_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="ready-probe")


@require_GET
def health_ready(request):
    """Readiness: database, both gRPC services and the channel layer, checked concurrently."""
    metering = _probe_pool.submit(
        _guard, _check_grpc, settings.METERING_GRPC_ADDRESS, "creto.metering.v1.MeteringService"
    )
    oversight = _probe_pool.submit(
        _guard, _check_grpc, settings.OVERSIGHT_GRPC_ADDRESS, "creto.oversight.v1.OversightService"
    )
    layer = _probe_pool.submit(_guard, _check_channel_layer)
    checks = {
        "database": _guard(_check_database),
        "metering": metering.result(),
        "oversight": oversight.result(),
        "channel_layer": layer.result(),
    }
    failing = sorted(name for name, value in checks.items() if value != "ok")
    if failing:
        body = {
            "status": "unavailable",
            "checks": checks,
            "failing": failing,
            "timestamp": utc_text(),
        }
        response = JsonResponse(body, status=503)
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ready", "checks": checks, "timestamp": utc_text()})


@require_GET
def metrics(request):
    """Prometheus text format: this process's counters plus the database gauges of the scrape."""
    register_domain_collector()
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
