"""The MCP streamable HTTP transport at ``/mcp``, beside the WebSocket endpoint (config/asgi.py).

Authentication: the owner's API token, ``Authorization: Token <key>`` or ``Bearer <key>``. A
request without a valid token is answered 401 with the API's ``unauthorized`` problem
document before the MCP layer sees it; each tool call then carries the same token into its
REST request (``mcp_tools.dispatch``), where DRF authenticates it again, as it would any call.

The SDK's app runs **stateless** with JSON responses: each POST is a complete exchange, no
session lives in one process's memory, so any serving process (ASGI replicas) can
answer any request, and a tool call's identity is the token of its own request rather than
whoever opened a session. The SDK's DNS-rebinding check (Host/Origin allow-lists) is off:
every call needs the token in a header, which a rebinding page cannot send, and the Host of
each call is checked against ``ALLOWED_HOSTS`` by Django when the call is served.

The SDK's session manager must be running (``StreamableHTTPSessionManager.run()``) while it
handles requests; the SDK documents starting it from the ASGI lifespan, which the servers here
do not send (daphne has none; uvicorn runs with ``--lifespan off``). So the first request of an
event loop enters ``run()`` in a task of that loop, which stays inside it for the loop's
lifetime; a later request waits until it has started.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from mcp.server.transport_security import TransportSecuritySettings

from api import problems
from api.authentication import token_user
from api.limits import problem_response
from mcp_tools.dispatch import Caller
from mcp_tools.server import build_server

# The schemes a client may put before its token.
AUTH_SCHEMES = ("token", "bearer")


def token_of(authorization: str | None) -> str | None:
    """The key of ``Token <key>`` or ``Bearer <key>`` (either case), else None."""
    parts = (authorization or "").split()
    if len(parts) == 2 and parts[0].lower() in AUTH_SCHEMES:
        return parts[1]
    return None


def caller_of_request(request: Any) -> Caller:
    """The REST caller of an MCP HTTP request (a Starlette request): its token, peer address,
    Host and scheme, and the proxy headers the API's settings name."""
    headers = request.headers
    passed = {}
    for meta_key in (settings.RATE_LIMIT_IP_HEADER, _proxy_ssl_header()):
        if meta_key and meta_key.startswith("HTTP_"):
            name = meta_key.removeprefix("HTTP_").replace("_", "-").lower()
            if name in headers:
                passed[name] = headers[name]
    return Caller(
        token=token_of(headers.get("authorization")),
        client_address=request.client.host if request.client else "0.0.0.0",
        host=headers.get("host", "localhost"),
        scheme=request.url.scheme,
        headers=passed,
    )


def _proxy_ssl_header() -> str | None:
    header = settings.SECURE_PROXY_SSL_HEADER
    return header[0] if header else None


def _token_is_valid(key: str) -> bool:
    try:
        return token_user(key) is not None
    finally:
        # A worker thread outside any request: give the connection back now.
        connection.close()


token_is_valid = sync_to_async(_token_is_valid, thread_sensitive=False)


async def _send_django_response(response, send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.items()
            ],
        }
    )
    await send({"type": "http.response.body", "body": response.content})


class McpHttpApplication:
    """The ASGI application of ``/mcp``: the token check, then the SDK's streamable HTTP app."""

    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._app = None
        self._ready: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        server = build_server(caller_of_request=caller_of_request)
        self._app = server.streamable_http_app(
            streamable_http_path="/mcp",
            stateless_http=True,
            json_response=True,
            max_request_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self._loop, self._ready = loop, asyncio.Event()
        # Held here: the loop keeps only a weak reference to a task.
        self._runner = loop.create_task(self._run(server.session_manager, self._ready))

    @staticmethod
    async def _run(session_manager, ready: asyncio.Event) -> None:
        try:
            async with session_manager.run():
                ready.set()
                await asyncio.Event().wait()  # until the loop ends
        finally:
            # Should run() fail, requests are not left waiting: the SDK then refuses them.
            ready.set()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"/mcp serves HTTP only, not {scope['type']}")
        headers = {name.lower(): value for name, value in scope["headers"]}
        key = token_of(headers.get(b"authorization", b"").decode("latin-1"))
        if key is None or not await token_is_valid(key):
            await self._unauthorized(scope, send, key is None)
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # One session manager per event loop (a server has one; tests start many).
            self._start(loop)
        await self._ready.wait()
        await self._app(scope, receive, send)

    @staticmethod
    async def _unauthorized(scope, send, missing: bool) -> None:
        request = ASGIRequest(scope, io.BytesIO())
        detail = (
            "Send the owner's API token: Authorization: Token <key> (or Bearer <key>)."
            if missing
            else "Invalid token."
        )
        response = problem_response(request, problems.Unauthorized(detail))
        response["WWW-Authenticate"] = 'Token realm="api", Bearer realm="api"'
        await _send_django_response(response, send)


mcp_http_application = McpHttpApplication()
