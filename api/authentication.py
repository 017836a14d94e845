"""Token authentication of the REST API."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``, as DRF documents it: the token is read with its user in
    one query (``select_related("user")``); an unknown key or an inactive user is 401 with
    DRF's message and the ``WWW-Authenticate: Token`` challenge."""

    keyword = "Token"


def token_user(key: str):
    """The active user owning the API token ``key``, or None: the check of
    ``TokenAuthentication``, for the entry points outside DRF (the WebSocket's ``?token=``,
    the MCP endpoint's header)."""
    try:
        user, _token = TokenAuthentication().authenticate_credentials(key)
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
