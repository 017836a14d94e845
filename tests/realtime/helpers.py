"""Helpers of the WebSocket tests: subscribing, receiving, publishing like a domain service."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from config.asgi import application
from realtime.services import publish_agent_event

ORIGIN = "http://testserver"


async def open_socket(
    token: str | None = None, *, origin: str | None = ORIGIN, cookie: str | None = None
) -> tuple[WebsocketCommunicator, bool]:
    """Open ``/ws/`` on the project's ASGI application as a browser on the test host would;
    returns the communicator and whether the server accepted the connection."""
    headers = [(b"host", b"testserver")]
    if origin:
        headers.append((b"origin", origin.encode()))
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    path = f"/ws/?token={token}" if token else "/ws/"
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def subscribe(communicator, **message) -> dict:
    await communicator.send_json_to({"action": "subscribe", **message})
    return await communicator.receive_json_from(timeout=5)


async def receive_events(communicator, count: int, timeout: float = 5) -> list[dict]:
    return [await communicator.receive_json_from(timeout=timeout) for _ in range(count)]


class Rollback(Exception):
    pass


def publish_sync(agent_id, *, event="trade.created", channel="trades", data=None, rollback=False):
    """Publish one event in its own transaction, as a domain service would."""
    try:
        with transaction.atomic():
            seq = publish_agent_event(
                agent_id=agent_id, event=event, channel=channel, data=data or {"n": 1}
            )
            if rollback:
                raise Rollback
    except Rollback:
        return None
    return seq


publish = database_sync_to_async(publish_sync)
