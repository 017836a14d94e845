"""The token cache: a client's later requests skip the token's query, and every revocation
made through Django is refused on the very next request, in this process and in any other."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from api.authentication import REVOKED, token_cache_key, token_cache_revoke, token_user
from tests.realtime.servers import ServerProcess, gunicorn_command, server_env, shared_database_url

AGENTS = "/api/v1/agents"
# A cache nobody listens on: connecting is refused at once.
UNREACHABLE_CACHE = {
    "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
}


def token_queries(client) -> int:
    """How many statements of one ``GET /agents`` read the token table; asserts it is 200."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(AGENTS)
    assert response.status_code == 200, response.content
    return sum('"authtoken_token"' in q["sql"] for q in queries.captured_queries)


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.django_db
def test_a_known_token_is_read_once_then_served_from_the_cache(token_cache, owner, agent_factory):
    agent_factory(name="mine")
    client = with_token(Token.objects.create(user=owner).key)

    assert token_queries(client) == 1
    assert token_queries(client) == 0
    response = client.get(AGENTS)
    assert [a["name"] for a in response.json()["results"]] == ["mine"]


@pytest.mark.django_db
def test_without_the_cache_every_request_reads_its_token(settings, owner):
    settings.API_TOKEN_CACHE_SECONDS = 0
    client = with_token(Token.objects.create(user=owner).key)

    assert [token_queries(client) for _ in range(2)] == [1, 1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "revoke",
    [
        pytest.param(lambda user, token: token.delete(), id="token deleted"),
        pytest.param(lambda user, token: Token.objects.filter(pk=token.pk).delete(), id="bulk"),
        pytest.param(lambda user, token: user.delete(), id="user deleted"),
        pytest.param(
            lambda user, token: (setattr(user, "is_active", False), user.save()),
            id="user deactivated",
        ),
    ],
)
def test_a_cached_token_is_refused_right_after_its_revocation(token_cache, user_factory, revoke):
    user = user_factory(username="revoked-owner")
    token = Token.objects.create(user=user)
    client = with_token(token.key)
    token_queries(client)
    assert token_queries(client) == 0  # cached

    revoke(user, token)

    response = client.get(AGENTS)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_a_regenerated_token_replaces_the_old_one_at_once(token_cache, owner):
    old = Token.objects.create(user=owner)
    old_client = with_token(old.key)
    token_queries(old_client)

    old.delete()
    new_client = with_token(Token.objects.create(user=owner).key)

    assert old_client.get(AGENTS).status_code == 401
    assert new_client.get(AGENTS).status_code == 200


@pytest.mark.django_db
def test_a_login_keeps_the_token_cached(token_cache, owner):
    from django.contrib.auth.models import update_last_login

    client = with_token(Token.objects.create(user=owner).key)
    token_queries(client)

    update_last_login(None, owner)

    assert token_queries(client) == 0


@pytest.mark.django_db
def test_a_request_that_read_the_token_before_its_revocation_does_not_keep_it(token_cache, owner):
    # given: a revocation under way (the mark is written before the change)
    token = Token.objects.create(user=owner)
    token_cache_revoke([token.key])
    client = with_token(token.key)

    # when: requests read the token meanwhile (it is still in the database)
    # then: none of them keeps it, so none can answer for it once the change is made
    assert [token_queries(client) for _ in range(2)] == [1, 1]


@pytest.mark.django_db
def test_the_websocket_and_mcp_check_reads_the_token_from_the_database(token_cache, owner):
    # served on an event loop, where the cache handler would build a client per connection
    key = Token.objects.create(user=owner).key
    with CaptureQueriesContext(connection) as queries:
        users = [token_user(key), token_user(key)]

    assert users == [owner, owner]
    assert sum('"authtoken_token"' in q["sql"] for q in queries.captured_queries) == 2


@pytest.mark.django_db
def test_a_revocation_is_marked_again_when_its_transaction_commits(
    token_cache, owner, django_capture_on_commit_callbacks
):
    token = Token.objects.create(user=owner)
    client = with_token(token.key)
    token_queries(client)
    cache_key = token_cache_key(token.key)
    kept = cache.get(cache_key)

    with django_capture_on_commit_callbacks(execute=True):
        token.delete()
        # a transaction open longer than the first mark, and a request that kept the token
        cache.set(cache_key, kept, 300)

    assert cache.get(cache_key) == REVOKED
    assert client.get(AGENTS).status_code == 401


@pytest.mark.django_db
def test_an_entry_kept_with_other_user_columns_is_not_used(token_cache, owner, agent_factory):
    # given: what a process of another version of the user model kept for the token
    agent_factory(name="mine")
    token = Token.objects.create(user=owner)
    written = (token.created, ("id", "username"), (owner.pk + 1000, "somebody-else"))
    cache.set(token_cache_key(token.key), written, 300)

    # when / then: the token is read from the database and authenticates its own user
    client = with_token(token.key)
    assert token_queries(client) == 1
    assert [a["name"] for a in client.get(AGENTS).json()["results"]] == ["mine"]


@pytest.mark.django_db
def test_with_the_cache_down_requests_are_served_and_revocations_refused(
    token_cache, settings, owner
):
    token = Token.objects.create(user=owner)
    client = with_token(token.key)
    settings.CACHES = UNREACHABLE_CACHE

    assert client.get(AGENTS).status_code == 200  # the database answers alone

    with pytest.raises(Exception, match=r"Connection refused"), transaction.atomic():
        token.delete()
    assert Token.objects.filter(pk=token.pk).exists()


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_token_revoked_here_is_refused_by_every_worker_of_the_server(
    fresh_reference_services, owner
):
    """gunicorn with two workers has answered the token (from the shared cache after its first
    read); the token is then deleted by this process, as the admin of another server would."""
    token = Token.objects.create(user=owner)
    env = server_env(
        fresh_reference_services,
        database_url=shared_database_url(),
        redis_url=settings.REDIS_URL,
        WEB_CONCURRENCY="2",
        WEB_THREADS="1",
    )
    web = ServerProcess(gunicorn_command(), env)

    def status() -> int:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{web.http}{AGENTS}", headers={"Authorization": f"Token {token.key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    try:
        web.wait_ready()
        assert [status() for _ in range(20)] == [200] * 20

        token.delete()

        assert [status() for _ in range(20)] == [401] * 20
    finally:
        web.stop()
