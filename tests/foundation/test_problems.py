"""Every error the foundation can produce is an RFC 7807 problem document."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.urls import path
from rest_framework.views import APIView

from api import problems
from tests.helpers import assert_problem


@pytest.mark.django_db
def test_unauthenticated_api_call_is_401_problem(anon_client):
    body = assert_problem(anon_client.get("/api/v1/agents"), 401, "unauthorized")
    assert body["instance"] == "/api/v1/agents"


@pytest.mark.django_db
def test_invalid_token_is_401_problem(anon_client):
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_problem(anon_client.get("/api/v1/agents"), 401, "unauthorized")


@pytest.mark.django_db
def test_unknown_api_route_is_404_problem(owner_client):
    assert_problem(owner_client.get("/api/v1/no-such-thing"), 404, "not-found")
    assert_problem(owner_client.post("/api/nothing/here", {}), 404, "not-found")


@pytest.mark.django_db
def test_wrong_method_is_405_problem(anon_client):
    assert_problem(anon_client.get("/api/v1/auth/token"), 405, "method-not-allowed")


@pytest.mark.django_db
def test_malformed_json_is_400_problem(anon_client):
    response = anon_client.post(
        "/api/v1/auth/token", data="{not json", content_type="application/json"
    )
    assert_problem(response, 400, "validation-error")


@pytest.mark.django_db
def test_field_errors_are_listed(anon_client):
    body = assert_problem(
        anon_client.post("/api/v1/auth/token", {}, format="json"), 400, "validation-error"
    )
    assert set(body["errors"]) == {"username", "password"}
    assert all(isinstance(m, str) for m in body["errors"]["username"])


@pytest.mark.django_db
def test_wrong_content_type_is_415_problem(anon_client):
    response = anon_client.post(
        "/api/v1/auth/token", data="username=a&password=b", content_type="text/plain"
    )
    assert_problem(response, 415, "unsupported-media-type")


# Views that raise what domain code may raise, to check the handler's mapping end to end.


class _RaiseDjangoValidation(APIView):
    permission_classes = []
    authentication_classes = []

    def get(self, request):
        from django.core.exceptions import ValidationError

        raise ValidationError({"budget": ["Ensure this value is at least 1000."]})


class _RaiseSecret(APIView):
    permission_classes = []
    authentication_classes = []

    def get(self, request):
        raise RuntimeError("password=hunter2 leaked from a bug")


class _RaiseInsufficientFunds(APIView):
    permission_classes = []
    authentication_classes = []

    def get(self, request):
        from decimal import Decimal

        raise problems.InsufficientFunds(required=Decimal("150.10"), available=Decimal("99.5"))


class _RaiseGrpcUnavailable(APIView):
    permission_classes = []
    authentication_classes = []

    def get(self, request):
        from grpc_clients.errors import ServiceUnavailable

        raise ServiceUnavailable(
            service="metering", method="CheckQuota", code="UNAVAILABLE", detail="connect refused"
        )


class _RaiseQuota(APIView):
    permission_classes = []
    authentication_classes = []

    def get(self, request):
        raise problems.QuotaExceeded(limit=100, remaining=0, retry_after=120)


urlpatterns = [
    path("api/t/django-validation", _RaiseDjangoValidation.as_view()),
    path("api/t/secret", _RaiseSecret.as_view()),
    path("api/t/funds", _RaiseInsufficientFunds.as_view()),
    path("api/t/grpc", _RaiseGrpcUnavailable.as_view()),
    path("api/t/quota", _RaiseQuota.as_view()),
]


@pytest.fixture
def raising_urls(settings):
    import config.urls

    settings.ROOT_URLCONF = __name__
    # The problem pages and the rest of the project stay reachable for `type` links.
    globals()["urlpatterns"] = urlpatterns[:5] + list(config.urls.urlpatterns)
    return settings


def test_django_validation_error_becomes_400_with_errors(raising_urls, anon_client):
    body = assert_problem(anon_client.get("/api/t/django-validation"), 400, "validation-error")
    assert body["errors"] == {"budget": ["Ensure this value is at least 1000."]}


def test_unexpected_exception_is_500_without_internals(raising_urls, anon_client, caplog):
    anon_client.raise_request_exception = False
    response = anon_client.get("/api/t/secret")
    body = assert_problem(response, 500, "internal-error")
    assert "hunter2" not in response.content.decode()
    assert "RuntimeError" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert body["detail"] == problems.InternalError.default_detail


def test_insufficient_funds_carries_required_and_available(raising_urls, anon_client):
    body = assert_problem(anon_client.get("/api/t/funds"), 402, "insufficient-funds")
    assert body["required"] == "150.10"
    assert body["available"] == "99.5"


def test_grpc_outage_is_503_with_retry_after(raising_urls, anon_client):
    response = anon_client.get("/api/t/grpc")
    body = assert_problem(response, 503, "service-unavailable")
    assert int(response["Retry-After"]) > 0
    assert "connect refused" not in response.content.decode()
    assert body["service"] == "metering"


def test_quota_exceeded_is_429_with_retry_after(raising_urls, anon_client):
    response = anon_client.get("/api/t/quota")
    body = assert_problem(response, 429, "quota-exceeded")
    assert response["Retry-After"] == "120"
    assert (body["limit"], body["remaining"]) == (100, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "slug",
    [
        "validation-error",
        "unauthorized",
        "insufficient-funds",
        "forbidden",
        "self-approval",
        "not-found",
        "conflict",
        "agent-not-active",
        "idempotency-conflict",
        "insufficient-position",
        "position-limit",
        "quota-exceeded",
        "rate-limited",
        "internal-error",
        "service-unavailable",
    ],
)
def test_problem_type_urls_resolve_to_a_description(anon_client, slug):
    response = anon_client.get(f"/problems/{slug}/")
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == slug
    assert body["title"] and body["description"]


@override_settings(DEBUG=False)
@pytest.mark.django_db
def test_unknown_problem_slug_is_404(anon_client):
    assert anon_client.get("/problems/no-such-problem/").status_code == 404
