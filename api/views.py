"""The API's own endpoints: its root documents, the token login, and its 404."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.lockout import lockout_message, lockout_seconds
from api import problems
from api.serializers import StrictInputSerializer


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
