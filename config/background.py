"""Background work of a serving process: periodic jobs run in daemon threads.

Each job is a plain function of the domain (``trades.services.market_tick`` and so on) called
every ``interval`` seconds. A job that raises is logged and called again at the next interval:
one failure never stops the loop. ``stop()`` ends the loop and waits for the current call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import close_old_connections

logger = logging.getLogger("trading_demo.background")


@dataclass
class PeriodicJob:
    name: str
    interval: float
    function: Callable[[], object]
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"job-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
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


def default_jobs() -> list[PeriodicJob]:
    """The jobs every serving process runs: market ticks, outbox delivery, expiries."""
    from django.conf import settings

    from metering.services import usage_deliver_pending
    from oversight.services import approvals_expire_due
    from trades.services import market_tick, orders_expire_day

    return [
        PeriodicJob("market", settings.MARKET_TICK_MS / 1000, market_tick),
        PeriodicJob("outbox", settings.OUTBOX_DELIVERY_INTERVAL_MS / 1000, usage_deliver_pending),
        PeriodicJob("approval-expiry", 5.0, approvals_expire_due),
        PeriodicJob("day-orders", 5.0, orders_expire_day),
    ]
