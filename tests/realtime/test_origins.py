"""Another site's page cannot open ``/ws/`` with the user's cookie, in the default configuration
(``ALLOWED_HOSTS='*'``) as in production (``ALLOWED_HOSTS`` listed)."""

from __future__ import annotations

import contextlib
import logging

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from tests.realtime.helpers import ORIGIN

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def handshake(owner, token_for):
    """Open ``/ws/`` with the owner's token as a page of ``origin`` served from ``host``;
    return whether the server accepted. Sockets are closed at teardown."""
    token = await database_sync_to_async(token_for)(owner)
    opened: list[WebsocketCommunicator] = []

    async def connect(*, host: str, origin: str | None) -> bool:
        headers = [(b"host", host.encode())]
        if origin is not None:
            headers.append((b"origin", origin.encode()))
        communicator = WebsocketCommunicator(application, f"/ws/?token={token}", headers=headers)
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=5)
        return connected

    yield connect
    for communicator in opened:
        if not communicator.future.done():
            with contextlib.suppress(Exception):
                await communicator.disconnect(timeout=2)


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "https://evil.example", "http://testserver.evil.example", "null"],
)
async def test_by_default_another_sites_page_cannot_open_the_socket(handshake, settings, origin):
    # given: the development default
    settings.ALLOWED_HOSTS = ["*"]

    # when/then: a page of another site, with the user's credentials, is refused
    assert await handshake(host="testserver", origin=origin) is False


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("testserver", "http://testserver"),
        ("trading.lan:3000", "http://trading.lan:3000"),
        ("testserver", "http://localhost:5173"),
        ("testserver", "http://127.0.0.1:3000"),
        ("localhost:3000", "http://localhost:3000"),
    ],
)
async def test_by_default_pages_of_the_served_host_and_of_localhost_open_the_socket(
    handshake, settings, host, origin
):
    settings.ALLOWED_HOSTS = ["*"]

    assert await handshake(host=host, origin=origin) is True


async def test_by_default_a_program_without_an_origin_opens_the_socket(handshake, settings):
    # a program (not a browser page) sends no Origin and has no browser cookie to abuse
    settings.ALLOWED_HOSTS = ["*"]

    assert await handshake(host="testserver", origin=None) is True


async def test_in_production_only_origins_of_the_allowed_hosts_open_the_socket(handshake, settings):
    settings.ALLOWED_HOSTS = ["trading.example.com"]

    assert await handshake(host="trading.example.com", origin="https://trading.example.com")
    assert not await handshake(host="trading.example.com", origin="http://localhost:3000")
    assert not await handshake(host="trading.example.com", origin="https://evil.example")
    assert not await handshake(host="trading.example.com", origin=None)


async def test_a_websocket_on_another_path_is_refused_not_an_error(caplog):
    # given a client that opens a WebSocket on a path that is not the live endpoint
    communicator = WebsocketCommunicator(
        application, "/ws/live", headers=[(b"host", b"testserver"), (b"origin", ORIGIN.encode())]
    )
    # when it connects
    with caplog.at_level(logging.ERROR):
        connected, _ = await communicator.connect(timeout=5)
    # then the handshake is refused, and the server logs no error for it
    assert connected is False
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
