"""Background work of a serving process: periodic jobs run in daemon threads.

Each job is a plain function of the domain (``trades.services.market_tick`` and so on) called
every ``interval`` seconds. A job that raises is logged and called again at the next interval:
one failure never stops the loop. Within a run, a job that works row by row processes each row
in its own transaction and reports one it cannot process with ``background_row_failed``
(logged with its id, counted in ``/metrics``) before going on with the others. ``stop()`` ends
the loop and waits for the current call.

A ``singleton`` job runs its function only while this process holds the leader lock
(``runtime.leader``): among several serving processes exactly one ticks the market, delivers
the outbox and expires orders and approvals. The others keep trying to take the lock and take
over within a renew interval of the leader stopping (a crashed leader: within the lease).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import close_old_connections

from runtime.leader import Leadership

logger = logging.getLogger("trading_demo.background")


@dataclass
class PeriodicJob:
    name: str
    interval: float
    function: Callable[[], object]
    singleton: bool = False
    leadership: Leadership | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.singleton and self.leadership is None:
            raise ValueError(f"singleton job {self.name!r} needs a Leadership")

    def start(self) -> None:
        if self.singleton:
            self.leadership.start()
        self._thread = threading.Thread(target=self._run, name=f"job-{self.name}", daemon=True)
        self._thread.start()

    def _may_run(self) -> bool:
        return not self.singleton or self.leadership.is_leader

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._may_run():
                continue
            try:
                self.function()
            except Exception:
                logger.exception("background job %s failed; retrying next interval", self.name)
            finally:
                close_old_connections()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.singleton:
            self.leadership.stop()


def database_pool_check() -> None:
    """Check the idle connections of this process's PostgreSQL pools, replacing broken ones
    (a database restart, a connection an idle timeout cut), so that a request is handed a
    working connection without a round trip to check it first (``DATABASE_HEALTH_CHECKS``)."""
    from django.db import connections

    for alias in connections:
        pool = getattr(connections[alias], "pool", None)
        if pool is not None and not pool.closed:
            pool.check()


def default_jobs(leadership: Leadership | None = None) -> list[PeriodicJob]:
    """The jobs every serving process runs: market ticks, outbox delivery, expiries, all
    singletons sharing one leader lock (from the settings unless given); and the check of
    the process's own database pool."""
    from django.conf import settings

    from metering.services import usage_deliver_pending
    from realtime.services import event_buffer_prune
    from runtime.leader import leadership_from_settings
    from trades.services import approvals_expire_due, market_tick, orders_expire_day

    leadership = leadership or leadership_from_settings()

    def singleton(name: str, interval: float, function) -> PeriodicJob:
        return PeriodicJob(name, interval, function, singleton=True, leadership=leadership)

    return [
        singleton("market", settings.MARKET_TICK_MS / 1000, market_tick),
        singleton("outbox", settings.OUTBOX_DELIVERY_INTERVAL_MS / 1000, usage_deliver_pending),
        singleton("approval-expiry", 5.0, approvals_expire_due),
        singleton("day-orders", 5.0, orders_expire_day),
        # Events of agents that went quiet: the buffer keeps 24 h (publishing prunes by size).
        singleton("event-buffer-prune", 600.0, event_buffer_prune),
        PeriodicJob(
            "database-pool-check", settings.DATABASE_POOL_CHECK_INTERVAL, database_pool_check
        ),
    ]
