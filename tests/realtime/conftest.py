"""Fixtures for the WebSocket tests: communicators against the real ASGI application.

Every consumer test is ``django_db(transaction=True)``: the endpoint's queries run in the
database thread of ``database_sync_to_async``, another connection than the test's, and events
are sent on commit, so rows must really be committed.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from tests.realtime.helpers import ORIGIN, open_socket


@pytest.fixture(autouse=True)
async def flushed_channel_layer():
    """Start and end each test with an empty layer (Redis groups otherwise outlive a test)."""
    layer = get_channel_layer()
    await layer.flush()
    yield layer
    await layer.flush()


@pytest.fixture
def make_agent(owner):
    """An agent row. The realtime tests need only the row, not the agent services' effects."""
    from agents.models import Agent

    def make(*, user=None, name: str = "Streamer") -> Agent:
        return Agent.objects.create(
            owner=user or owner,
            name=name,
            budget=Decimal("100000"),
            cash_balance=Decimal("100000"),
        )

    return make


@pytest.fixture
async def ws():
    """Open WebSocket connections; all are closed at teardown."""
    opened: list[WebsocketCommunicator] = []

    async def connect(
        token: str | None = None,
        *,
        origin: str | None = ORIGIN,
        cookie: str | None = None,
        expect_accept: bool = True,
    ) -> WebsocketCommunicator:
        communicator, connected = await open_socket(token, origin=origin, cookie=cookie)
        opened.append(communicator)
        assert connected is expect_accept
        return communicator

    yield connect
    for communicator in opened:
        # A receive that timed out has already cancelled the application.
        if not communicator.future.done():
            with contextlib.suppress(Exception):
                await communicator.disconnect(timeout=2)
