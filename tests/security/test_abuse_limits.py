"""Abuse limits: the /api/ rate limit per address (anonymous) and per user, the per-user
limit on order submission, the page size cap. (The WebSocket frame size and message rate caps
are tested in tests/realtime.)"""

from __future__ import annotations

import random
import threading
import time
import zlib
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.test import RequestFactory, override_settings
from rest_framework.test import APIClient

from tests.helpers import assert_problem


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def seconds_left_in_window(ip: str, period: int) -> int:
    """django-ratelimit's window end for this key (a per-key offset into the period)."""
    now = int(time.time())
    end = now - (now % period) + (zlib.crc32(ip.encode()) % period)
    return (end + period if end < now else end) - now


@pytest.mark.django_db
@override_settings(RATE_LIMIT_ENABLED=True, RATE_LIMIT="3/m")
def test_anonymous_requests_over_the_per_address_limit_are_429_saying_which_limit(mine):
    # given three anonymous requests allowed per minute per address
    anonymous = APIClient()
    for _ in range(3):
        assert anonymous.get("/api").status_code == 200
    # when
    response = anonymous.get("/api/v1/", REMOTE_ADDR="127.0.0.1")
    # then: the answer names the limit, its size and when it resets
    assert_problem(response, 429, "rate-limited")
    retry_after = int(response["Retry-After"])
    expected = seconds_left_in_window("127.0.0.1", 60)
    assert 1 <= retry_after <= 60
    assert abs(retry_after - max(1, expected)) <= 1
    body = response.json()
    assert body["detail"].startswith(
        f"The API limit of 3 requests per minute per address is used up; it resets in "
        f"{retry_after} s (at "
    )
    assert (body["limit"], body["period_seconds"], body["scope"]) == (3, 60, "address")
    assert body["reset_at"].endswith("Z")
    # every anonymous /api/ route counts, the token login too
    assert_problem(anonymous.post("/api/v1/auth/token", {}, format="json"), 429, "rate-limited")
    # a signed-in user on the same address has their own budget (the dashboard's buttons)
    assert mine.client.get("/api/v1/agents").status_code == 200
    # another address has its own budget; non-API routes are not limited
    assert anonymous.get("/api", REMOTE_ADDR="10.9.8.7").status_code == 200
    assert anonymous.get("/health/live").status_code == 200


@pytest.mark.django_db
@override_settings(RATE_LIMIT_ENABLED=True, RATE_LIMIT="3/m")
def test_authenticated_requests_are_limited_per_user(mine, theirs):
    # given a user who spent their three requests
    for _ in range(3):
        assert mine.client.get("/api/v1/agents").status_code == 200
    # when
    response = mine.client.get("/api/v1/agents")
    # then
    assert_problem(response, 429, "rate-limited")
    body = response.json()
    assert body["detail"].startswith(
        "The API limit of 3 requests per minute for this user is used up; it resets in "
    )
    assert (body["limit"], body["scope"]) == (3, "user")
    # another user from the same address is not affected
    assert theirs.client.get("/api/v1/agents").status_code == 200


@pytest.mark.django_db
@override_settings(RATE_LIMIT_ENABLED=True, RATE_LIMIT="3/m")
def test_refused_tokens_count_against_the_address(db):
    guesser = APIClient()
    guesser.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    for _ in range(3):
        assert guesser.get("/api/v1/agents").status_code == 401
    assert_problem(guesser.get("/api/v1/agents"), 429, "rate-limited")


@pytest.mark.django_db
@override_settings(RATE_LIMIT_ENABLED=False, RATE_LIMIT="1/m")
def test_rate_limit_switched_off(mine):
    for _ in range(5):
        assert mine.client.get("/api/v1/agents").status_code == 200


@pytest.mark.django_db
@override_settings(RATE_LIMIT_ENABLED=True, RATE_LIMIT="1000/m", TRADE_RATE_LIMIT="2/m")
def test_order_submission_is_limited_per_token(mine, theirs):
    # given two orders allowed per minute per user
    order = {
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "limit_price": "10.00",
        "quantity": "1",
        "time_in_force": "gtc",
    }
    path = f"/api/v1/agents/{mine.agent_id}/trades"
    from trades.models import Trade

    for _ in range(2):
        assert mine.client.post(path, order, format="json").status_code == 201
    before = Trade.objects.count()
    # when
    response = mine.client.post(path, order, format="json")
    # then
    assert_problem(response, 429, "rate-limited")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert Trade.objects.count() == before
    # reads are not order submissions; another token (same IP) has its own budget
    assert mine.client.get(path).status_code == 200
    theirs_path = f"/api/v1/agents/{theirs.agent_id}/trades"
    assert theirs.client.post(theirs_path, order, format="json").status_code == 201


@pytest.mark.django_db
@override_settings(
    RATE_LIMIT_ENABLED=True,
    RATE_LIMIT="1/m",
    RATELIMIT_USE_CACHE="unreachable",
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "unreachable": {
            # the backend REDIS_URL selects (config.settings), at an address nothing serves
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        },
    },
)
def test_rate_limit_fails_open_when_its_cache_is_down(mine):
    for _ in range(3):
        assert mine.client.get("/api/v1/agents").status_code == 200


@pytest.mark.redis
@pytest.mark.django_db
def test_per_ip_limit_is_exact_under_concurrency_on_redis(settings):
    # given the Redis cache, a limit of 10 and 40 threads released together from one IP
    from api.limits import RateLimitMiddleware

    assert "RedisCache" in settings.CACHES["default"]["BACKEND"]
    settings.RATE_LIMIT_ENABLED = True
    settings.RATE_LIMIT = "10/h"
    ip = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    middleware = RateLimitMiddleware(lambda request: "allowed")
    barrier = threading.Barrier(40)
    outcomes: list[object] = []
    lock = threading.Lock()

    def client():
        request = RequestFactory().get("/api/v1/agents", REMOTE_ADDR=ip)
        barrier.wait()
        outcome = middleware(request)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(40)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # then exactly ten got through and thirty were told to retry
    allowed = [o for o in outcomes if o == "allowed"]
    refused = [o for o in outcomes if o != "allowed"]
    assert len(outcomes) == 40
    assert len(allowed) == 10
    assert {r.status_code for r in refused} == {429}


@pytest.mark.django_db
def test_page_size_is_capped_at_200(owner, owner_client):
    # given 205 agents
    from agents.models import Agent

    Agent.objects.bulk_create(
        Agent(owner=owner, name=f"bulk {i}", budget=Decimal("1000"), cash_balance=Decimal("1000"))
        for i in range(205)
    )
    # when
    response = owner_client.get("/api/v1/agents?page_size=100000")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 205
    assert len(body["results"]) == 200
    assert "page_size=100000" in body["next"]


@pytest.mark.django_db
@override_settings(
    RATE_LIMIT_ENABLED=True, RATE_LIMIT="2/m", RATE_LIMIT_IP_HEADER="HTTP_X_FORWARDED_FOR"
)
def test_behind_a_proxy_each_client_address_has_its_own_budget(db):
    # given every request arriving from the proxy's address, the client's in X-Forwarded-For
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    anonymous = APIClient()

    def get(forwarded: str | None):
        extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
        return anonymous.get("/api", **proxy, **extra)

    # when one client spends its budget (the proxy appended the address it saw, last)
    for _ in range(2):
        assert get("203.0.113.9, 198.51.100.7").status_code == 200
    # then it is limited, and a client's own claim in front of it does not help
    assert_problem(get("1.2.3.4, 198.51.100.7"), 429, "rate-limited")
    # another client is not
    assert get("198.51.100.8").status_code == 200
    # a missing or malformed header counts against the connection's address, never a 500
    assert get("not-an-ip").status_code == 200
    assert get(None).status_code == 200
    assert_problem(get(""), 429, "rate-limited")
