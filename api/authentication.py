"""Token authentication of the REST API, and the cache of who each token belongs to."""

from __future__ import annotations

import functools
import hashlib
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import router, transaction
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

logger = logging.getLogger(__name__)

# What a revocation leaves under a token's cache key: "ask the database". No request stores
# the token's user over it (``cache.add``) until it expires. It outlives any request that read
# the token before the change, and is written again when the change commits.
REVOKED = "revoked"
REVOKED_SECONDS = 60


def token_cache_key(key: str) -> str:
    """The cache key of the API token ``key``: a digest, so the cache never holds a token."""
    return "api-token:" + hashlib.sha256(key.encode()).hexdigest()


@functools.cache
def _user_fields() -> tuple[str, ...]:
    """The user's columns kept in the cache: all but the password hash, which no request needs
    and which has no business in a cache (``Model.from_db`` leaves it deferred)."""
    fields = get_user_model()._meta.get_fields()
    return tuple(
        f.attname for f in fields if f.concrete and not f.many_to_many and f.name != "password"
    )


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``, as DRF documents it: an unknown key or an inactive user
    is 401 with DRF's message and the ``WWW-Authenticate: Token`` challenge.

    DRF reads the token with its user in one query (``select_related("user")``). With
    ``API_TOKEN_CACHE_SECONDS`` (on with Redis, the cache every process shares) the answer is
    kept in the cache for that long, so a client's later requests skip that query. It holds
    exactly as DRF's check because every change that could alter the answer marks the token
    ``REVOKED`` before it is made (``api.receivers``): deleting the token or its user, and
    saving the user (deactivating it, say). While the mark lasts, the token is read from the
    database on every request and its answer is not kept, so a request that read the old row
    just before the change cannot store it after. A change made around the ORM (SQL,
    ``QuerySet.update()``) reaches the cache after at most ``API_TOKEN_CACHE_SECONDS``.
    """

    keyword = "Token"

    def authenticate_credentials(self, key):
        seconds = settings.API_TOKEN_CACHE_SECONDS
        if not seconds:
            return super().authenticate_credentials(key)
        cache_key = token_cache_key(key)
        try:
            cached = cache.get(cache_key)
        except Exception as exc:
            # The cache is down: the database alone answers, as without a cache.
            logger.warning("token cache unavailable (%s); reading the token", type(exc).__name__)
            return super().authenticate_credentials(key)
        # An entry written with other user columns (before a migration) is not used.
        if isinstance(cached, tuple) and cached[1] == _user_fields():
            return _from_cache(key, cached)
        user, token = super().authenticate_credentials(key)
        if cached is None:
            fields = _user_fields()
            values = (token.created, fields, tuple(getattr(user, name) for name in fields))
            try:
                cache.add(cache_key, values, seconds)
            except Exception as exc:
                logger.warning("token cache unavailable (%s)", type(exc).__name__)
        return user, token


def _from_cache(key: str, cached: tuple):
    """The user and token as DRF's query would have read them (the password left deferred)."""
    created, fields, values = cached
    user_model = get_user_model()
    user = user_model.from_db(router.db_for_read(user_model), fields, values)
    token = Token.from_db(
        router.db_for_read(Token), ["key", "user_id", "created"], [key, user.pk, created]
    )
    token.user = user
    return user, token


def token_cache_revoke(keys) -> None:
    """Mark the API tokens ``keys`` ``REVOKED`` in the cache, now and again when the current
    transaction commits: their next requests read them from the database.

    Called before a change that could alter who a token authenticates (``api.receivers``).
    If the cache cannot be written the exception propagates and the change is not made: a
    revocation never succeeds while a stale answer could outlive it."""
    if not settings.API_TOKEN_CACHE_SECONDS:
        return
    marks = {token_cache_key(key): REVOKED for key in keys}
    if not marks:
        return
    cache.set_many(marks, REVOKED_SECONDS)

    def mark_again() -> None:
        # A transaction open longer than the mark: marked again once its change is visible.
        try:
            cache.set_many(marks, REVOKED_SECONDS)
        except Exception as exc:
            logger.warning("token cache unavailable at commit (%s)", type(exc).__name__)

    transaction.on_commit(mark_again)


def token_user(key: str):
    """The active user owning the API token ``key``, or None: DRF's check, for the entry points
    outside DRF (the WebSocket's ``?token=``, the MCP endpoint's header).

    Read from the database, not the token cache: these are served on an event loop, where
    Django's cache handler (context-local) would build a cache client for every connection
    and keep it as long as the connection lives; a WebSocket checks its token once."""
    try:
        user, _token = authentication.TokenAuthentication().authenticate_credentials(key)
    except exceptions.AuthenticationFailed:
        return None
    return user


class BearerTokenAuthentication(TokenAuthentication):
    """The same token under ``Authorization: Bearer <key>``, the scheme most HTTP clients and
    SDKs send by default (RFC 6750 spelling). DRF documents ``keyword`` for this."""

    keyword = "Bearer"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of ``BearerTokenAuthentication``: HTTP bearer, named apart
    from DRF's ``tokenAuth`` so the schema lists both ways of sending the same token."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer"}
