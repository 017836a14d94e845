"""Leader election of the singleton jobs against the machine's real PostgreSQL and Redis.

Two contenders for the same lock stand for two serving processes: exactly one may lead, and
when it releases (or its session dies) the other takes over at its next heartbeat.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from runtime.jobs import PeriodicJob
from runtime.leader import (
    AlwaysLeader,
    Leadership,
    PostgresAdvisoryLock,
    RedisLock,
    lock_for,
)

PG_URL = os.environ.get("LEADER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("LEADER_TEST_REDIS_URL", "redis://127.0.0.1:6379/3")


def _postgres_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"
    return None


def _redis_reason() -> str | None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        return f"Redis not reachable at {REDIS_TEST_URL}: {exc}"
    return None


_pg_reason = _postgres_reason()
_redis_reason_text = _redis_reason()
needs_postgres = pytest.mark.skipif(_pg_reason is not None, reason=_pg_reason or "")
needs_redis = pytest.mark.skipif(_redis_reason_text is not None, reason=_redis_reason_text or "")


def _pg_lock(name: str) -> PostgresAdvisoryLock:
    return PostgresAdvisoryLock(name=name, conninfo=PG_URL)


def _redis_lock(name: str, lease: float = 10.0) -> RedisLock:
    return RedisLock(url=REDIS_TEST_URL, name=name, lease_seconds=lease, key_prefix="test:leader:")


@pytest.fixture
def lock_name():
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture(params=["postgresql", "redis"])
def make_lock(request, lock_name):
    """A factory of contenders for one fresh lock name, on each real backend."""
    if request.param == "postgresql":
        if _pg_reason:
            pytest.skip(_pg_reason)
        factory = _pg_lock
    else:
        if _redis_reason_text:
            pytest.skip(_redis_reason_text)
        factory = _redis_lock
    made = []

    def make():
        lock = factory(lock_name)
        made.append(lock)
        return lock

    yield make
    for lock in made:
        lock.release()


def test_two_contenders_exactly_one_leads(make_lock):
    # given two processes' locks on the same name
    first, second = make_lock(), make_lock()

    # when both try, repeatedly, as their heartbeats would
    results = [(first.acquire_or_renew(), second.acquire_or_renew()) for _ in range(3)]

    # then the first to ask leads every time and the other never does
    assert results == [(True, False)] * 3


def test_release_hands_over_to_the_other(make_lock):
    # given a leader and a follower
    leader, follower = make_lock(), make_lock()
    assert leader.acquire_or_renew() is True
    assert follower.acquire_or_renew() is False

    # when the leader releases (clean shutdown)
    leader.release()

    # then the follower's next attempt takes the lock, and the old leader is refused it back
    assert follower.acquire_or_renew() is True
    assert leader.acquire_or_renew() is False


@needs_postgres
def test_postgres_leader_session_dying_frees_the_lock(lock_name):
    # given a leader holding the advisory lock on its own connection
    leader, follower = _pg_lock(lock_name), _pg_lock(lock_name)
    try:
        assert leader.acquire_or_renew() is True
        assert follower.acquire_or_renew() is False

        # when its session ends without unlocking (as when the process is killed)
        leader._conn.close()

        # then the server drops the lock as the backend exits (asynchronously, so the
        # follower's heartbeats retry) and the follower takes it
        _wait_for(follower.acquire_or_renew, 3.0)
        # and the old leader, reconnecting, sees it is no longer the leader
        assert leader.acquire_or_renew() is False
    finally:
        leader.release()
        follower.release()


@needs_postgres
def test_postgres_session_killed_by_the_server_steps_the_leader_down(lock_name):
    import psycopg

    # given a leader whose session the server terminates (failover, admin kill, network cut)
    leader, follower = _pg_lock(lock_name), _pg_lock(lock_name)
    try:
        assert leader.acquire_or_renew() is True
        pid = leader._conn.info.backend_pid
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        # when the follower's heartbeats retry until the killed backend has exited
        _wait_for(follower.acquire_or_renew, 3.0)
        # then the old leader steps down rather than believing it still leads
        assert leader.acquire_or_renew() is False
    finally:
        leader.release()
        follower.release()


@needs_redis
def test_redis_lease_expires_when_the_leader_stops_renewing(lock_name):
    # given a leader on a short lease that then goes silent (process frozen or killed)
    leader, follower = _redis_lock(lock_name, lease=0.3), _redis_lock(lock_name, lease=0.3)
    try:
        assert leader.acquire_or_renew() is True
        assert follower.acquire_or_renew() is False

        # when the lease runs out
        time.sleep(0.5)

        # then the follower takes over, and the old leader's compare-and-extend fails
        assert follower.acquire_or_renew() is True
        assert leader.acquire_or_renew() is False
    finally:
        leader.release()
        follower.release()


def _wait_for(predicate, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def test_leadership_takes_over_within_the_renew_interval(make_lock):
    # given two processes' heartbeats on the same lock
    renew = 0.3
    first = Leadership(make_lock(), renew_interval=renew, lease=2.0)
    second = Leadership(make_lock(), renew_interval=renew, lease=2.0)
    first.start()
    _wait_for(lambda: first.is_leader, 2.0)
    second.start()
    try:
        time.sleep(renew * 3)
        assert (first.is_leader, second.is_leader) == (True, False)

        # when the leader stops (releasing its lock)
        first.stop()

        # then the follower leads within one renew interval (plus scheduling slack)
        took = _wait_for(lambda: second.is_leader, renew + 0.5)
        assert took <= renew + 0.5
        assert first.is_leader is False
    finally:
        first.stop()
        second.stop()


def test_singleton_job_runs_only_in_the_leader_and_moves_on_failover(make_lock):
    # given the same singleton job in two "processes", each with its own leadership
    calls = {"a": 0, "b": 0}
    lock = threading.Lock()

    def counter(name):
        def run():
            with lock:
                calls[name] += 1

        return run

    lead_a = Leadership(make_lock(), renew_interval=0.2, lease=2.0)
    lead_b = Leadership(make_lock(), renew_interval=0.2, lease=2.0)
    job_a = PeriodicJob("tick", 0.05, counter("a"), singleton=True, leadership=lead_a)
    job_a.start()
    _wait_for(lambda: lead_a.is_leader, 2.0)
    job_b = PeriodicJob("tick", 0.05, counter("b"), singleton=True, leadership=lead_b)
    job_b.start()
    try:
        # when both run for a while
        time.sleep(0.6)

        # then only the leader's job did any work
        assert calls["a"] > 0
        assert calls["b"] == 0

        # when the leader's process stops its jobs (and so its leadership)
        job_a.stop()
        before = calls["a"]
        _wait_for(lambda: calls["b"] > 0, 2.0)

        # then the other process's job runs, and the stopped one no longer does
        assert calls["a"] == before
    finally:
        job_a.stop()
        job_b.stop()


def test_without_postgres_or_redis_the_only_process_always_leads():
    # given the embedded default (SQLite, no REDIS_URL)
    leadership = Leadership(AlwaysLeader(), renew_interval=0.05, lease=1.0)

    # when its heartbeat runs once
    leadership.start()
    try:
        _wait_for(lambda: leadership.is_leader, 1.0)
    finally:
        leadership.stop()

    # then it led, and stopping stepped it down
    assert leadership.is_leader is False


def test_a_leader_that_cannot_renew_steps_down_when_its_lease_ends():
    # given a lock server that answers once and then becomes unreachable
    class FlakyLock:
        backend = "flaky"

        def __init__(self):
            self.answers = iter([True])

        def acquire_or_renew(self):
            return next(self.answers, False)

        def release(self):
            pass

    leadership = Leadership(FlakyLock(), renew_interval=0.1, lease=0.3)

    # when it acquires, then every renewal fails
    assert leadership.heartbeat() is True
    assert leadership.heartbeat() is False

    # then it is no longer the leader, at once
    assert leadership.is_leader is False


def test_the_deployment_picks_its_lock():
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}

    # SQLite without Redis (the embedded default): always leader
    assert lock_for(sqlite, "").backend == "none"

    # SQLite with Redis: the Redis lock
    redis_lock = lock_for(sqlite, REDIS_TEST_URL)
    assert redis_lock.backend == "redis"
    redis_lock.release()

    # PostgreSQL (with or without Redis): the advisory lock, with the database's credentials
    postgres = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "trading",
        "USER": "app",
        "PASSWORD": "secret",
        "HOST": "db",
        "PORT": 5432,
        "OPTIONS": {"sslmode": "require", "pool": False},
    }
    pg_lock = lock_for(postgres, REDIS_TEST_URL)
    assert pg_lock.backend == "postgresql"
    assert pg_lock._connect_kwargs == {
        "dbname": "trading",
        "user": "app",
        "password": "secret",
        "host": "db",
        "port": "5432",
        "sslmode": "require",
    }
