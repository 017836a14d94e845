"""``manage.py run_market``: the simulated price feed as its own process.

The market alone, for a server that runs without its jobs (``serve --no-jobs``), or to tick a
database a given number of times (``--ticks``); ``run_jobs`` runs the market with the other
jobs, under leader election. Calls ``trades.services.market_tick`` every ``MARKET_TICK_MS``
until SIGINT or SIGTERM. A tick that fails is logged and the next one is tried, as in the
embedded job.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

logger = logging.getLogger("trading_demo.market")


class Command(BaseCommand):
    help = (
        "Run the simulated market feed (trades.services.market_tick every MARKET_TICK_MS "
        f"= {settings.MARKET_TICK_MS} ms: "
        "prices move, resting orders fill, market.price events go out) until Ctrl-C/SIGTERM. "
        "Not beside run_jobs or a serve with jobs, which tick the market themselves."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--ticks",
            type=int,
            default=0,
            help="stop after this many ticks (default 0: run until stopped)",
        )

    def handle(self, *args, ticks: int, **options):
        from trades.services import market_tick

        # The interval is the setting, not an option: market.tick skips a tick that comes
        # less than half of MARKET_TICK_MS after the last one (another process's).
        interval_ms = settings.MARKET_TICK_MS
        if ticks < 0:
            raise CommandError(f"--ticks must be 0 (forever) or positive, got {ticks}")

        stop = threading.Event()

        def request_stop(signum, _frame) -> None:
            self.stdout.write(f"{signal.Signals(signum).name} received; stopping the feed.")
            stop.set()

        previous = {
            signum: signal.signal(signum, request_stop)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        symbols = ", ".join(settings.MARKET_SYMBOLS)
        self.stdout.write(f"Market feed: {symbols} every {interval_ms} ms. Ctrl-C to stop.")
        done = failures = moved = 0
        interval = interval_ms / 1000
        try:
            next_at = time.monotonic()
            while not stop.is_set():
                try:
                    report = market_tick()
                    moved += 1 if report.get("ticked") else 0
                except Exception:
                    failures += 1
                    logger.exception("market tick failed; trying again next interval")
                finally:
                    close_old_connections()
                done += 1
                if ticks and done >= ticks:
                    break
                next_at += interval
                stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.stdout.write(
            f"Market feed stopped after {done} ticks ({moved} moved prices, {failures} failed)."
        )
        if ticks and failures == done:
            raise CommandError("every tick failed; see the log")
