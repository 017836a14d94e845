"""``Authorization: Token <key>`` on the REST API: who is let in, and the answers of the rest."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents"


def with_header(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


def test_a_valid_token_authenticates_its_user(owner, agent_factory, user_factory):
    agent_factory(name="mine")
    agent_factory(name="theirs", user=user_factory(username="someone-else"))
    token = Token.objects.create(user=owner)

    response = with_header(f"Token {token.key}").get(AGENTS)

    assert response.status_code == 200
    assert [a["name"] for a in response.json()["results"]] == ["mine"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_a_bearer_token_authenticates_its_user(scheme, owner, agent_factory):
    agent_factory(name="mine")
    token = Token.objects.create(user=owner)

    response = with_header(f"{scheme} {token.key}").get(AGENTS)

    assert response.status_code == 200, response.content
    assert [a["name"] for a in response.json()["results"]] == ["mine"]


def test_a_bad_bearer_token_is_401_invalid_token(owner):
    response = with_header("Bearer not-a-real-key").get(AGENTS)

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Token not-a-real-key", "Invalid token."),
        ("Token", "Invalid token header. No credentials provided."),
        ("Token a b", "Invalid token header. Token string should not contain spaces."),
    ],
)
def test_a_bad_token_is_401_with_drf_s_detail(header, detail, owner):
    response = with_header(header).get(AGENTS)

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["detail"] == detail
    assert response["WWW-Authenticate"] == "Token"


def test_the_token_of_a_deactivated_user_is_refused(owner):
    token = Token.objects.create(user=owner)
    owner.is_active = False
    owner.save(update_fields=["is_active"])

    response = with_header(f"Token {token.key}").get(AGENTS)

    assert response.status_code == 401
    assert response.json()["detail"] == "User inactive or deleted."


def test_a_deleted_token_no_longer_authenticates(owner):
    token = Token.objects.create(user=owner)
    client = with_header(f"Token {token.key}")
    assert client.get(AGENTS).status_code == 200

    token.delete()

    assert client.get(AGENTS).status_code == 401


def test_no_credentials_is_401_with_the_token_challenge(anon_client):
    response = anon_client.get(AGENTS)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
