"""Token authentication of the REST API."""

from __future__ import annotations

from rest_framework import authentication


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``, as DRF documents it: the token is read with its user in
    one query (``select_related("user")``); an unknown key or an inactive user is 401 with
    DRF's message and the ``WWW-Authenticate: Token`` challenge."""

    keyword = "Token"
