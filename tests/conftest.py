"""Shared fixtures: real reference gRPC services, users, tokens, API clients, agents, prices,
and the ``postgres``/``redis`` markers. Plain helpers are in ``tests/helpers.py``.

Both reference services run for the whole session on ephemeral loopback ports and the
settings point at them; in this process by default, in processes of their own with
``TEST_REFERENCE_SERVICES=processes`` (``make test-separate-services``). Tests that stop or
slow a service use ``fresh_reference_services``, which starts a private in-process pair for
that test only.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from grpc_clients.registry import reset_clients
from reference_services.server import start_reference_services
from tests.helpers import FIXED_PRICES, submit
from tests.reference import session_reference_services


@pytest.fixture(autouse=True)
def _backend_markers(request):
    """``@pytest.mark.postgres`` tests need row locks that really lock and a database other
    processes can see; ``@pytest.mark.redis`` tests need ``REDIS_URL``: skip them otherwise."""
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://…)")
    if request.node.get_closest_marker("redis") and not django_settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL=redis://…)")


def _point_settings_at(services) -> None:
    django_settings.METERING_GRPC_ADDRESS = services.metering_address
    django_settings.OVERSIGHT_GRPC_ADDRESS = services.oversight_address
    reset_clients()


@pytest.fixture(scope="session", autouse=True)
def reference_services():
    """The metering and oversight reference servers, shared by the session: in this process,
    or in processes of their own with ``TEST_REFERENCE_SERVICES=processes`` (or at
    ``TEST_METERING_GRPC_ADDRESS``/``TEST_OVERSIGHT_GRPC_ADDRESS``), see
    ``tests.reference.session_reference_services``."""
    services = session_reference_services()
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
def token_cache(settings):
    """The token cache on (``api.authentication``), as with Redis, on either backend: without
    Redis this process's cache stands in for the shared one."""
    settings.API_TOKEN_CACHE_SECONDS = 300


@pytest.fixture
def token_for():
    """The user's API token key (created on first use)."""

    def make(user) -> str:
        token, _ = Token.objects.get_or_create(user=user)
        return token.key

    return make


@pytest.fixture
def client_for(token_for):
    """An APIClient authenticated with the user's token."""

    def make(user) -> APIClient:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
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


@pytest.fixture
def prices(db):
    """The market at round prices (``tests.helpers.FIXED_PRICES``): notionals known in advance."""
    from trades import market

    for symbol, price in FIXED_PRICES.items():
        market.set_price(symbol, price)
    return {symbol: Decimal(price) for symbol, price in FIXED_PRICES.items()}


@pytest.fixture
def aapl_at_100(db):
    """AAPL at exactly 100.00, so an order's notional is 100 times its quantity."""
    from trades import market

    market.set_price("AAPL", "100.00")
    return Decimal("100.00")


@pytest.fixture
def submit_order(client_for, aapl_at_100):
    """POST a market order of AAPL for the agent as its owner; returns the response."""

    def make(agent, *, quantity: int, side: str = "buy", **extra):
        body = {"symbol": "AAPL", "side": side, "quantity": str(quantity), **extra}
        return submit(client_for(agent.owner), agent, **body)

    return make


@pytest.fixture
def pending_request(agent_factory, submit_order):
    """A 20,000 buy (200 AAPL at 100.00) waiting for one approval; returns (agent, trade JSON)."""

    def make(*, user=None, quantity: int = 200, budget: str = "100000"):
        agent = agent_factory(user=user, budget=budget) if user else agent_factory(budget=budget)
        response = submit_order(agent, quantity=quantity)
        assert response.status_code == 202, response.content
        return agent, response.json()

    return make
