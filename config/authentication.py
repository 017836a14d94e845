"""Token authentication of the REST API."""

from __future__ import annotations

from functools import cache

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from config import lean


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's ``Authorization: Token <key>``, the token and its user read in one statement.

    Every API request starts here. DRF's ``select_related("user").get(key=…)`` went through
    the query compiler each time, about 0.6 ms of CPU more than the statement itself on the
    benchmark machine; this is the same join, written once (as in ``config.lean``). Answers,
    messages and ``(user, token)`` are DRF's.
    """

    def authenticate_credentials(self, key):
        token_model = self.get_model()
        user_model = get_user_model()
        using = router.db_for_read(user_model)
        users = list(user_model.objects.db_manager(using).raw(_token_user_sql(using), [key]))
        if not users:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user = users[0]
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        created = lean.loaded(token_model._meta.get_field("created"), user.token_created, using)
        token = token_model(key=key, user=user, created=created)
        token._state.adding, token._state.db = False, using
        return user, token


@cache
def _token_user_sql(using: str) -> str:
    from rest_framework.authtoken.models import Token

    quote = connections[using].ops.quote_name
    user_opts, token_opts = get_user_model()._meta, Token._meta
    columns = ", ".join(f"u.{quote(f.column)}" for f in user_opts.concrete_fields)
    user_pk = quote(user_opts.pk.column)
    token_user = quote(token_opts.get_field("user").column)
    token_key = quote(token_opts.get_field("key").column)
    created = quote(token_opts.get_field("created").column)
    return (
        f"SELECT {columns}, t.{created} AS token_created "  # noqa: S608 (names from the models)
        f"FROM {quote(user_opts.db_table)} u JOIN {quote(token_opts.db_table)} t "
        f"ON t.{token_user} = u.{user_pk} WHERE t.{token_key} = %s"
    )
