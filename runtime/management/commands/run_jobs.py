"""``manage.py run_jobs``: the background jobs as a process of their own.

Runs ``runtime.jobs.default_jobs()`` (market feed, matching of resting orders, outbox
delivery, order and approval expiry, event-buffer pruning) until SIGINT or SIGTERM, then stops
them (each finishes the step it is in) and exits 0. First, once, it reconciles reservations
(``reservations_reconcile``): holds left by a crash are made equal to the live orders'.

Safe to run as several replicas: the singleton jobs run only in the process that holds the
leader lock (``runtime.leader``: a PostgreSQL advisory lock, else a Redis lease), and another
replica takes over within a lease of the leader stopping or vanishing.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Run the background jobs (market feed, outbox delivery, expiries) until Ctrl-C/SIGTERM; "
        "several replicas elect one leader for them."
    )

    def handle(self, *args, **options):
        from runtime.jobs import default_jobs
        from trades.services import reservations_reconcile

        stop = threading.Event()

        def request_stop(signum, _frame) -> None:
            stop.set()

        previous = {
            signum: signal.signal(signum, request_stop)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            reservations_reconcile()
            jobs = default_jobs()
            for job in jobs:
                job.start()
            names = ", ".join(job.name for job in jobs)
            self.stdout.write(f"Background jobs running: {names}. Ctrl-C to stop.")
            self.stdout.flush()
            while not stop.wait(1.0):
                pass
            self.stdout.write("Stopping the background jobs…")
            for job in jobs:
                job.stop()
            from grpc_clients.registry import reset_clients

            reset_clients()
            self.stdout.write("Stopped.")
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
