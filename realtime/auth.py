"""WebSocket authentication: a DRF token in ``?token=`` or the Django session cookie.

``TokenAuthMiddlewareStack(inner)`` is Channels' ``AuthMiddlewareStack`` (cookies, session,
``scope["user"]`` from the session) with a token step inside it: when the query string carries
``token``, the user is the token's (or anonymous for an unknown token or an inactive user),
whatever the session says. Browsers use the session; programs pass their API token.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser


@database_sync_to_async
def user_for_token(key: str):
    """The active user owning the DRF token ``key``, or ``AnonymousUser``."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class TokenAuthMiddleware(BaseMiddleware):
    """Sets ``scope["user"]`` from ``?token=`` when one is given."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin1"))
        tokens = query.get("token")
        if tokens:
            scope["user"] = await user_for_token(tokens[0][:128])
        return await super().__call__(scope, receive, send)


# The scope key of the server's own ``send``, below Channels' session wrapper.
EVENT_SEND = "trading_demo.event_send"


class EventSendMiddleware(BaseMiddleware):
    """Puts the server's ``send`` in the scope (``EVENT_SEND``) for the live event frames.

    Channels' session middleware wraps ``send`` to save a changed session with an HTTP
    response; for every message it first reads the lazily loaded session's ``modified`` and
    ``is_empty()``. An event frame has nothing to do with the session, and with a thousand
    clients on the market stream those reads were a seventh of the serving loop's time
    (py-spy). The consumer sends its event frames with this ``send``, everything else (accept,
    answers, close) through the wrapper.
    """

    async def __call__(self, scope, receive, send):
        return await super().__call__({**scope, EVENT_SEND: send}, receive, send)


def TokenAuthMiddlewareStack(inner):
    """Session authentication (cookie) overridden by ``?token=`` when present (named like
    Channels' ``AuthMiddlewareStack``, which it wraps), the event frames' ``send`` kept."""
    return EventSendMiddleware(AuthMiddlewareStack(TokenAuthMiddleware(inner)))
