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

from api.authentication import token_user


@database_sync_to_async
def user_for_token(key: str):
    """The active user owning the API token ``key``, or ``AnonymousUser``."""
    return token_user(key) or AnonymousUser()


class TokenAuthMiddleware(BaseMiddleware):
    """Sets ``scope["user"]`` from ``?token=`` when one is given."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin1"))
        tokens = query.get("token")
        if tokens:
            scope["user"] = await user_for_token(tokens[0][:128])
        return await super().__call__(scope, receive, send)


def TokenAuthMiddlewareStack(inner):
    """Session authentication (cookie) overridden by ``?token=`` when present (named like
    Channels' ``AuthMiddlewareStack``, which it wraps)."""
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))
