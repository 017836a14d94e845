"""One request of the REST API, made in process: what every MCP tool call is.

A tool call is served by the very chain that serves ``/api/v1`` over HTTP: Django's public WSGI
handler (``django.core.wsgi.get_wsgi_application``) is called with an environ built from the
MCP caller's token and address, so the middleware (request id, body and per-IP rate limits,
``api_calls`` metering), DRF's token authentication, permissions and throttles, the views and
their services (validation, quotas, oversight, idempotency on ``client_order_id``, live events
on commit) and the problem+json error path all apply unchanged. Nothing here re-implements a
rule; a rule added to the API later governs the tools too.

The handler is synchronous; ``api_request`` runs it in a worker thread with asgiref's
``sync_to_async``, off the event loop of the MCP transport.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from asgiref.sync import sync_to_async
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

API_PREFIX = "/api/v1"


@dataclass(frozen=True)
class Caller:
    """Who makes the calls of an MCP connection, as an HTTP request would carry it.

    ``token`` is the owner's API token key (sent as ``Authorization: Token <key>``, the form
    the REST API accepts); ``client_address`` is the peer address the per-IP rate limit
    counts; ``host`` and ``scheme`` are what Django checks against ``ALLOWED_HOSTS`` and
    ``SECURE_SSL_REDIRECT``. ``headers`` are further request headers passed through as WSGI
    ``HTTP_*`` keys (the proxy's client-address and protocol headers).
    """

    token: str | None
    client_address: str
    host: str
    scheme: str = "http"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """The API's answer: status, the parsed JSON body (None if empty) and the headers."""

    status: int
    body: Any
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.status < 400


_handler: WSGIHandler | None = None


def wsgi_handler() -> WSGIHandler:
    """Django's WSGI handler for this process, built on first use (its middleware loaded once)."""
    global _handler
    if _handler is None:
        _handler = get_wsgi_application()
    return _handler


def _environ(
    caller: Caller, method: str, path: str, query: dict[str, Any] | None, payload: bytes
) -> dict:
    address = urlsplit("//" + caller.host)
    try:
        port = address.port or (443 if caller.scheme == "https" else 80)
    except ValueError:  # not a port: Django's host check answers 400 for the Host header
        port = 80
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": urlencode(
            {key: value for key, value in (query or {}).items() if value is not None}
        ),
        "SERVER_NAME": address.hostname or "localhost",
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": caller.client_address,
        "HTTP_HOST": caller.host,
        "HTTP_ACCEPT": "application/json",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": caller.scheme,
        "wsgi.input": io.BytesIO(payload),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in caller.headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    if caller.token:
        environ["HTTP_AUTHORIZATION"] = f"Token {caller.token}"
    if payload:
        environ["CONTENT_TYPE"] = "application/json"
        environ["CONTENT_LENGTH"] = str(len(payload))
    return environ


def api_request_sync(
    caller: Caller,
    method: str,
    path: str,
    *,
    query: dict[str, Any] | None = None,
    body: Any = None,
) -> Answer:
    """Serve ``method API_PREFIX + path`` for ``caller`` through Django's WSGI handler."""
    payload = b"" if body is None else json.dumps(body).encode()
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
        started["status"] = int(status.split(" ", 1)[0])
        started["headers"] = dict(headers)

    chunks = wsgi_handler()(
        _environ(caller, method, API_PREFIX + path, query, payload), start_response
    )
    try:
        content = b"".join(chunks)
    finally:
        # request_finished: the request's database connection goes back, as under a WSGI server.
        chunks.close()
    parsed = json.loads(content) if content else None
    return Answer(status=started["status"], body=parsed, headers=started["headers"])


api_request = sync_to_async(api_request_sync, thread_sensitive=False)
