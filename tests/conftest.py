"""Shared fixtures: real reference gRPC services, users, tokens, API clients and factories.

Both reference services run for the whole session on ephemeral loopback ports and the
settings point at them. Tests that stop or slow a service use ``fresh_reference_services``,
which starts a private pair for that test only.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from grpc_clients.registry import reset_clients
from reference_services.server import start_reference_services


def _point_settings_at(services) -> None:
    django_settings.METERING_GRPC_ADDRESS = services.metering_address
    django_settings.OVERSIGHT_GRPC_ADDRESS = services.oversight_address
    reset_clients()


@pytest.fixture(scope="session", autouse=True)
def reference_services():
    """The metering and oversight reference servers, shared by the session."""
    services = start_reference_services()
    _point_settings_at(services)
    yield services
    services.stop(grace=0)
    reset_clients()


@pytest.fixture
def fresh_reference_services(reference_services):
    """A private pair of reference servers for a test that stops, slows or breaks them."""
    services = start_reference_services()
    _point_settings_at(services)
    yield services
    services.stop(grace=0)
    _point_settings_at(reference_services)


@pytest.fixture
def user_factory(db):
    counter = iter(range(1, 1_000_000))

    def make(*, username: str | None = None, operator: bool = False, staff: bool = False, **extra):
        name = username or f"user{next(counter)}"
        user = User.objects.create_user(
            username=name, password="pw-" + name, is_staff=staff, **extra
        )
        if operator:
            group, _ = Group.objects.get_or_create(name=django_settings.OPERATORS_GROUP)
            user.groups.add(group)
        return user

    return make


@pytest.fixture
def owner(user_factory):
    return user_factory(username="owner")


@pytest.fixture
def other_owner(user_factory):
    return user_factory(username="other-owner")


@pytest.fixture
def operator(user_factory):
    return user_factory(username="operator", operator=True)


@pytest.fixture
def client_for():
    """An APIClient authenticated with the user's token."""

    def make(user) -> APIClient:
        token, _ = Token.objects.get_or_create(user=user)
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return api

    return make


@pytest.fixture
def owner_client(owner, client_for):
    return client_for(owner)


@pytest.fixture
def anon_client():
    return APIClient()


@pytest.fixture
def agent_factory(owner):
    """Create an agent through the domain service, as the API would; with the operator's
    authority over limits (``actor`` None) unless ``actor=`` names the user who asks."""

    def make(*, user=None, budget: str | Decimal = "100000", **overrides):
        from agents.services import agent_create

        return agent_create(
            owner=user or owner,
            name=overrides.pop("name", "Test agent"),
            budget=Decimal(str(budget)),
            **overrides,
        )

    return make
