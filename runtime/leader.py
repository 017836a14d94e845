"""Leader election for the singleton background jobs (market feed, outbox delivery, expiries).

Several serving processes may run against one database; only the one holding the leader lock
runs the singleton jobs, so the market never ticks twice and the outbox is not delivered twice.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) taken on a dedicated
  psycopg connection, not Django's per-thread one. PostgreSQL releases it when that session
  ends, so a crashed leader's lock goes away with its connection. The heartbeat re-checks, on
  every renewal, that the session is alive and still holds the lock.
- Redis (``REDIS_URL`` without PostgreSQL): ``SET key token NX PX lease`` and a Lua
  compare-and-extend on every heartbeat; a leader that stops renewing loses the key when the
  lease runs out, and a clean shutdown deletes it (compare-and-delete) at once.
- Neither (the embedded SQLite default, one process): this process is always the leader.

Whatever the backend, leadership is a lease on this side too: a process believes it leads
only until ``lease`` seconds after its last successful acquisition or renewal, so a heartbeat
that stalls or cannot reach the lock server steps the process down before another one can
take over.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from typing import Protocol

logger = logging.getLogger("trading_demo.leader")

DEFAULT_LOCK_NAME = "background-jobs"


class LeaderLock(Protocol):
    """One contender's handle on a named lock shared by every process of the deployment."""

    backend: str

    def acquire_or_renew(self) -> bool:
        """Take the lock if free, or confirm and extend it if held; True while this holds it."""

    def release(self) -> None:
        """Give the lock up (if held) and free the resources behind it. Never raises."""


class AlwaysLeader:
    """The single-process default: nothing to compete with."""

    backend = "none"

    def acquire_or_renew(self) -> bool:
        return True

    def release(self) -> None:
        return None


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key derived from the lock name."""
    digest = hashlib.sha256(f"trading-demo:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresAdvisoryLock:
    """A session-level advisory lock held on a connection of its own.

    ``conninfo`` is a libpq connection string or URL; ``connect_kwargs`` are passed to
    ``psycopg.connect`` (host, port, user, password, dbname, sslmode…).
    """

    backend = "postgresql"

    def __init__(
        self,
        *,
        name: str = DEFAULT_LOCK_NAME,
        conninfo: str = "",
        connect_kwargs: dict | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.key = advisory_key(name)
        self._conninfo = conninfo
        self._connect_kwargs = dict(connect_kwargs or {})
        self._timeout = timeout
        self._conn = None
        self._held = False

    def _connect(self):
        import psycopg

        timeout_ms = int(self._timeout * 1000)
        self._conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=max(1, int(self._timeout)),
            application_name="trading-demo-leader",
            # A heartbeat query that hangs (network partition) fails instead of blocking, and
            # TCP keepalives let the server end our session — and free the lock — if we vanish.
            options=f"-c statement_timeout={timeout_ms}",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            **self._connect_kwargs,
        )

    def _still_held(self) -> bool:
        # pg_locks shows a bigint advisory key as its high and low 32 bits (objsubid 1).
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        row = self._conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid = pg_backend_pid() AND objsubid = 1"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
            (high, low),
        ).fetchone()
        return bool(row and row[0])

    def acquire_or_renew(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._held = False
                self._connect()
            if self._held:
                self._held = self._still_held()
                if not self._held:
                    logger.warning("advisory lock %s no longer held by this session", self.key)
            if not self._held:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self._held = bool(row and row[0])
        except Exception as exc:
            # A broken session has lost its lock on the server side (or soon will): step down
            # and reconnect at the next heartbeat.
            logger.warning("leader lock (postgresql) check failed: %s", exc)
            self._held = False
            self._close()
        return self._held

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the leader lock connection failed", exc_info=True)

    def release(self) -> None:
        try:
            if self._held and self._conn is not None and not self._conn.closed:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except Exception:
            logger.debug("advisory unlock failed; closing the session frees it", exc_info=True)
        finally:
            self._held = False
            self._close()


# Extend the key's expiry only while it still carries our token: a process whose lease ran out
# must never extend (or delete) the lock another process has since taken.
_RENEW_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLock:
    """A Redis key holding this contender's random token, with an expiry renewed by heartbeat."""

    backend = "redis"

    def __init__(
        self,
        *,
        url: str,
        name: str = DEFAULT_LOCK_NAME,
        lease_seconds: float = 10.0,
        timeout: float = 2.0,
        key_prefix: str = "trading-demo:leader:",
    ) -> None:
        import redis

        self.key = f"{key_prefix}{name}"
        self.token = uuid.uuid4().hex
        self._lease_ms = int(lease_seconds * 1000)
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._renew = self._client.register_script(_RENEW_SCRIPT)
        self._release = self._client.register_script(_RELEASE_SCRIPT)
        self._held = False

    def acquire_or_renew(self) -> bool:
        try:
            if self._held:
                self._held = bool(self._renew(keys=[self.key], args=[self.token, self._lease_ms]))
                if not self._held:
                    logger.warning("redis leader lock %s expired or taken over", self.key)
            if not self._held:
                self._held = bool(
                    self._client.set(self.key, self.token, nx=True, px=self._lease_ms)
                )
        except Exception as exc:
            logger.warning("leader lock (redis) check failed: %s", exc)
            self._held = False
        return self._held

    def release(self) -> None:
        try:
            if self._held:
                self._release(keys=[self.key], args=[self.token])
        except Exception:
            logger.debug("redis lock release failed; it expires on its own", exc_info=True)
        finally:
            self._held = False
            try:
                self._client.close()
            except Exception:
                logger.debug("closing the redis client failed", exc_info=True)


class Leadership:
    """Runs the heartbeat that acquires or renews a ``LeaderLock`` every ``renew_interval``.

    ``is_leader`` is true only while the last successful acquisition or renewal is younger than
    ``lease`` seconds. ``start``/``stop`` are reference-counted so that every job sharing this
    object can start and stop it; the lock is released when the last one stops.
    """

    def __init__(self, lock: LeaderLock, *, renew_interval: float = 2.0, lease: float = 10.0):
        if lease <= renew_interval:
            raise ValueError("the lease must be longer than the renew interval")
        self.lock = lock
        self.renew_interval = renew_interval
        self.lease = lease
        self._valid_until = 0.0
        self._users = 0
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_leader = False

    @property
    def backend(self) -> str:
        return self.lock.backend

    @property
    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    def heartbeat(self) -> bool:
        """Acquire or renew once; return whether this process leads now."""
        started = time.monotonic()
        if self.lock.acquire_or_renew():
            # The lease counts from before the round trip, never from after it.
            self._valid_until = started + self.lease
        else:
            self._valid_until = 0.0
        leader = self.is_leader
        if leader != self._was_leader:
            self._was_leader = leader
            if leader:
                logger.info("this process is now the leader (%s lock)", self.backend)
            else:
                logger.warning("this process is no longer the leader (%s lock)", self.backend)
        _set_leader_gauge(leader)
        return leader

    def _run(self) -> None:
        while True:
            try:
                self.heartbeat()
            except Exception:
                self._valid_until = 0.0
                logger.exception("leader heartbeat failed")
            if self._stop.wait(self.renew_interval):
                return

    def start(self) -> None:
        with self._guard:
            self._users += 1
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="leader-heartbeat", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._guard:
            self._users = max(0, self._users - 1)
            if self._users or self._thread is None:
                return
            thread, self._thread = self._thread, None
        self._stop.set()
        thread.join(timeout)
        self._valid_until = 0.0
        self._was_leader = False
        self.lock.release()
        _set_leader_gauge(False)


def _set_leader_gauge(value: bool) -> None:
    from observability.metrics import LEADER

    LEADER.set(1 if value else 0)


def lock_for(
    database: dict, redis_url: str = "", *, name: str = DEFAULT_LOCK_NAME, lease: float = 10.0
) -> LeaderLock:
    """The lock a deployment calls for: PostgreSQL's, else Redis's, else none (one process)."""
    if database["ENGINE"] == "django.db.backends.postgresql":
        return PostgresAdvisoryLock(name=name, connect_kwargs=_psycopg_kwargs(database))
    if redis_url:
        return RedisLock(url=redis_url, name=name, lease_seconds=lease)
    return AlwaysLeader()


def lock_from_settings(name: str = DEFAULT_LOCK_NAME) -> LeaderLock:
    from django.conf import settings

    return lock_for(
        settings.DATABASES["default"],
        settings.REDIS_URL,
        name=name,
        lease=settings.LEADER_LEASE_SECONDS,
    )


# Keys of Django's OPTIONS that are not libpq connection parameters.
_DJANGO_ONLY_OPTIONS = {
    "pool",
    "server_side_binding",
    "isolation_level",
    "assume_role",
    "cursor_factory",
    "context",
}


def _psycopg_kwargs(database: dict) -> dict:
    kwargs = {
        "dbname": database.get("NAME") or None,
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "host": database.get("HOST") or None,
        "port": str(database["PORT"]) if database.get("PORT") else None,
    }
    for key, value in (database.get("OPTIONS") or {}).items():
        if key not in _DJANGO_ONLY_OPTIONS and key != "options":
            kwargs[key] = value
    return {key: value for key, value in kwargs.items() if value is not None}


def leadership_from_settings(name: str = DEFAULT_LOCK_NAME) -> Leadership:
    from django.conf import settings

    return Leadership(
        lock_from_settings(name),
        renew_interval=settings.LEADER_RENEW_SECONDS,
        lease=settings.LEADER_LEASE_SECONDS,
    )
