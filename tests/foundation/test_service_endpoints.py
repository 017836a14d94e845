"""Health, API root, schema, docs, token login."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.contrib.auth.models import User


def test_live(client):
    response = client.get("/health/live")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["timestamp"].endswith("Z")


@pytest.mark.django_db
def test_ready_when_everything_is_up(client):
    response = client.get("/health/ready")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {
        "database": "ok",
        "metering": "ok",
        "oversight": "ok",
        "channel_layer": "ok",
    }


@pytest.fixture
def separate_services(reference_services):
    """Metering and oversight as two separately stoppable real servers."""
    from grpc_clients.registry import reset_clients
    from reference_services.server import start_reference_services

    metering = start_reference_services(oversight_address=None)
    oversight = start_reference_services(metering_address=None)
    settings.METERING_GRPC_ADDRESS = metering.metering_address
    settings.OVERSIGHT_GRPC_ADDRESS = oversight.oversight_address
    reset_clients()
    yield {"metering": metering, "oversight": oversight}
    metering.stop(grace=0)
    oversight.stop(grace=0)
    settings.METERING_GRPC_ADDRESS = reference_services.metering_address
    settings.OVERSIGHT_GRPC_ADDRESS = reference_services.oversight_address
    reset_clients()


@pytest.mark.django_db
@pytest.mark.parametrize("service", ["metering", "oversight"])
def test_ready_names_a_stopped_service(client, separate_services, service):
    # given: one real server stopped, the other running
    separate_services[service].stop(grace=0)
    # when
    started = time.monotonic()
    response = client.get("/health/ready")
    # then
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"][service] == "unavailable"
    assert body["failing"] == [service]
    assert response["Retry-After"]


def test_api_root_lists_links(client):
    body = client.get("/api").json()
    assert body["name"] == "Trading Demo Server"
    assert body["version"]
    assert body["links"]["docs"].endswith("/api/docs/")
    assert body["links"]["agents"].endswith("/api/v1/agents")


@pytest.mark.django_db
def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    doc = schema.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/auth/token" in doc["paths"]
    # the service endpoints are documented too, with what they answer
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert "get" in doc["paths"][path], path
    assert set(doc["paths"]["/health/ready"]["get"]["responses"]) == {"200", "503"}
    # component names read as words
    components = set(doc["components"]["schemas"])
    assert "LoginRequest" in components
    assert not [name for name in components if name.endswith("RequestRequest")]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


@pytest.mark.django_db
def test_token_login_returns_a_working_token(anon_client):
    User.objects.create_user("alice", password="s3cret-pass")
    response = anon_client.post(
        "/api/v1/auth/token", {"username": "alice", "password": "s3cret-pass"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    # the same token on a second login
    again = anon_client.post(
        "/api/v1/auth/token", {"username": "alice", "password": "s3cret-pass"}, format="json"
    )
    assert again.json()["token"] == token
    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon_client.get("/api/v1/agents").status_code == 200


@pytest.mark.django_db
def test_token_login_with_wrong_password_is_401(anon_client):
    User.objects.create_user("bob", password="right-pass")
    response = anon_client.post(
        "/api/v1/auth/token", {"username": "bob", "password": "wrong"}, format="json"
    )
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")
    assert "token" not in response.json()


@pytest.mark.django_db
def test_operators_group_exists():
    from django.contrib.auth.models import Group

    assert Group.objects.filter(name="operators").exists()


def test_request_id_is_echoed_or_generated(client):
    given = client.get("/health/live", HTTP_X_REQUEST_ID="abc-123")
    assert given["X-Request-ID"] == "abc-123"
    generated = client.get("/health/live")
    assert len(generated["X-Request-ID"]) == 32
    hostile = client.get("/health/live", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert hostile["X-Request-ID"] != "bad id\nwith newline"


def _links(body: dict) -> list[str]:
    return [link for link in body.values() if link.startswith("http://")]


@pytest.mark.django_db
def test_every_link_of_the_api_root_resolves(anon_client, client_for, operator):
    # given: a newcomer who follows the links of /api, first without a token, then with one
    root = anon_client.get("/api").json()["links"]
    assert root["v1"].endswith("/api/v1/")
    signed_in = client_for(operator)

    # when / then: no link answers 404 (a POST-only endpoint answers 405 to a GET)
    for link in _links(root):
        assert anon_client.get(link).status_code != 404, link
        assert signed_in.get(link).status_code in {200, 405}, link


@pytest.mark.django_db
def test_api_v1_lists_the_resources(anon_client, client_for, operator):
    response = anon_client.get("/api/v1/")
    assert response.status_code == 200, response.content
    resources = response.json()["resources"]
    assert set(resources) >= {"token", "agents", "market_prices", "oversight_requests"}
    signed_in = client_for(operator)
    for name, link in resources.items():
        assert signed_in.get(link).status_code in {200, 405}, name


def test_the_favicon_is_served(client):
    response = client.get("/favicon.ico", follow=True)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("image/svg+xml")
