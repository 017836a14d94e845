"""Service endpoints: health, API root, token login, metrics, and the API's 404."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import authenticate
from django.db import connection
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config import problems
from config.lockout import lockout_message, lockout_seconds
from config.metrics import register_domain_collector
from config.serializers import StrictInputSerializer
from grpc_clients.health import check_health


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@require_GET
def health_live(request):
    """Liveness: the process answers HTTP. Checks nothing else on purpose."""
    return JsonResponse({"status": "ok", "timestamp": _now()})


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
            "timestamp": _now(),
        }
        response = JsonResponse(body, status=503)
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ready", "checks": checks, "timestamp": _now()})


@require_GET
def metrics(request):
    """Prometheus text format: this process's counters plus the database gauges of the scrape."""
    register_domain_collector()
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


@require_GET
def favicon(request):
    """Browsers ask every page's host for /favicon.ico: answer with the project's icon rather
    than a 404 on every load (the dashboard, the admin, the API docs)."""
    return HttpResponseRedirect(static("dashboard/favicon.svg"))


def index_redirect(request):
    return HttpResponseRedirect("/api")


class ApiRootView(APIView):
    """Name, version and the links a client starts from."""

    permission_classes = [AllowAny]

    @extend_schema(
        responses=inline_serializer(
            "ApiRoot",
            {
                "name": serializers.CharField(),
                "version": serializers.CharField(),
                "links": serializers.DictField(child=serializers.CharField()),
            },
        )
    )
    def get(self, request):
        def url(path: str) -> str:
            return request.build_absolute_uri(path)

        return Response(
            {
                "name": settings.APP_NAME,
                "version": settings.APP_VERSION,
                "environment": settings.DJANGO_ENV,
                "links": {
                    "self": url("/api"),
                    "v1": url("/api/v1/"),
                    "token": url("/api/v1/auth/token"),
                    "agents": url("/api/v1/agents"),
                    "market_prices": url("/api/v1/market/prices"),
                    "oversight_requests": url("/api/v1/oversight/requests"),
                    "schema": url("/api/schema/"),
                    "docs": url("/api/docs/"),
                    "health_live": url("/health/live"),
                    "health_ready": url("/health/ready"),
                    "metrics": url("/metrics"),
                    "websocket": url("/ws/").replace("http", "ws", 1),
                },
            }
        )


class ApiV1RootView(APIView):
    """The resources of version 1: every link answers (a collection, or a POST-only endpoint)."""

    permission_classes = [AllowAny]

    @extend_schema(
        responses=inline_serializer(
            "ApiV1Root",
            {
                "version": serializers.CharField(),
                "resources": serializers.DictField(child=serializers.CharField()),
            },
        )
    )
    def get(self, request):
        def url(name: str) -> str:
            return request.build_absolute_uri(reverse(name))

        return Response(
            {
                "version": "v1",
                "resources": {
                    "token": url("auth-token"),
                    "agents": url("agent-list"),
                    "market_prices": url("market-prices"),
                    "oversight_requests": url("approval-request-list"),
                    "metering_events": url("metering-events"),
                },
                "docs": url("api-docs"),
            }
        )


class LoginSerializer(StrictInputSerializer):
    """A username and password (the schema's ``LoginRequest``)."""

    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()


class ObtainTokenView(APIView):
    """Exchange a username and password for the user's API token (created on first use)."""

    permission_classes = [AllowAny]
    authentication_classes = []
    serializer_class = LoginSerializer

    @extend_schema(
        request=LoginSerializer,
        responses={
            200: TokenResponseSerializer,
            401: OpenApiResponse(description="Unknown username or wrong password."),
            429: OpenApiResponse(
                description="Too many failed logins for this username or from this address."
            ),
        },
    )
    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The request goes to the backends: django-axes counts the failure per username and
        # per address, and marks the request when that login is locked out.
        user = authenticate(
            request=request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if getattr(request, "axes_locked_out", False):
            seconds = lockout_seconds(request)
            raise problems.RateLimited(lockout_message(seconds), retry_after=seconds)
        if user is None or not user.is_active:
            raise problems.Unauthorized("Unknown username or wrong password.")
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class ApiNotFoundView(APIView):
    """Any unknown path under /api: a 404 problem document, whatever the method."""

    permission_classes = [AllowAny]
    authentication_classes = []
    schema = None

    def initial(self, request, *args, **kwargs):
        raise problems.NotFound(f"No API route matches {request.path}.")

    def http_method_not_allowed(self, request, *args, **kwargs):
        raise problems.NotFound(f"No API route matches {request.path}.")
