"""WebSocket authentication: a DRF token in ``?token=`` or the Django session cookie.

``TokenAuthMiddlewareStack(inner)`` sets ``scope["user"]`` once, when the socket opens: with
``?token=`` the token's user (anonymous for an unknown token or an inactive user), whatever the
cookie says; otherwise the user of the session named by the session cookie, verified as
Django's ``get_user`` verifies it (the session's auth hash, an active user). Browsers use the
session; programs pass their API token.

The session is read, never written: a live socket changes nothing in it. Channels'
``SessionMiddleware`` exists to save a session that a consumer modified, and wraps every frame
sent to do so; reading the session through Django's documented ``SessionStore`` here keeps that
wrapper off the path of every live event.
"""

from __future__ import annotations

from importlib import import_module
from urllib.parse import parse_qs

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from api.authentication import token_user


@database_sync_to_async
def user_for_token(key: str):
    """The active user owning the API token ``key``, or ``AnonymousUser``."""
    return token_user(key) or AnonymousUser()


async def user_for_session(session_key: str | None):
    """The user logged in to the session ``session_key``, or ``AnonymousUser``."""
    if not session_key:
        return AnonymousUser()
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return await get_user({"session": store(session_key)})


class TokenAuthMiddleware(BaseMiddleware):
    """Sets ``scope["user"]`` from ``?token=`` when one is given, else from the session cookie
    (``scope["cookies"]``, set by Channels' ``CookieMiddleware``)."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin1"))
        tokens = query.get("token")
        if tokens:
            scope["user"] = await user_for_token(tokens[0][:128])
        else:
            session_key = scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME)
            scope["user"] = await user_for_session(session_key)
        return await super().__call__(scope, receive, send)


def TokenAuthMiddlewareStack(inner):
    """Cookies parsed (Channels' ``CookieMiddleware``), then the user from the token or the
    session (named like Channels' ``AuthMiddlewareStack``, which it stands in for)."""
    return CookieMiddleware(TokenAuthMiddleware(inner))
