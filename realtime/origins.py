"""Which pages may open ``/ws/``: the Origin check of the WebSocket, around Channels' validators.

A browser sends its session cookie with a WebSocket handshake to any site, so without an
Origin check any page could act with a logged-in user's session ("cross-site WebSocket
hijacking"). Browsers always send ``Origin`` on a WebSocket handshake and page scripts cannot
forge it.

- Production (``ALLOWED_HOSTS`` lists the hosts): the origin must be one of them, exactly as
  Channels' ``AllowedHostsOriginValidator`` checks it (a handshake without ``Origin`` is
  refused too).
- ``ALLOWED_HOSTS`` containing ``*`` (the development default): Channels would accept every
  origin. Here the origin must instead be the host the handshake was addressed to (its
  ``Host`` header: the page was served by this server) or a local development host
  (``localhost``, ``127.0.0.1``, ``[::1]``, any port). A handshake without ``Origin`` comes
  from a program, not a browser page, and carries no browser cookie to abuse: it is accepted,
  and the token or session still decides who it is.

Settings are read on every connection, so a test or a reloaded configuration takes effect at
once.
"""

from __future__ import annotations

from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from django.conf import settings
from django.http.request import split_domain_port

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _header(scope, name: bytes) -> bytes | None:
    for header_name, value in scope.get("headers", []):
        if header_name == name:
            return value
    return None


class WebSocketOriginValidator:
    """ASGI middleware: refuse a WebSocket handshake from another site's page (see above)."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if "*" not in settings.ALLOWED_HOSTS:
            validator = AllowedHostsOriginValidator(self.application)
            return await validator(scope, receive, send)
        if _header(scope, b"origin") is None:
            return await self.application(scope, receive, send)
        allowed = list(LOCAL_HOSTS)
        # The served host's name, any port (a pattern with a port would read as a scheme).
        host, _port = split_domain_port((_header(scope, b"host") or b"").decode("latin1"))
        if host:
            allowed.append(host)
        return await OriginValidator(self.application, allowed)(scope, receive, send)
