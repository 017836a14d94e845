"""``manage.py serve``: the server as ``make run`` starts it.

Starts, in this order: the embedded reference gRPC services (when ``EMBEDDED_SERVICES`` is on
and nothing listens on their addresses), the background jobs, then daphne on ``HOST:PORT``.
SIGINT/SIGTERM stop daphne; the jobs and gRPC servers are then stopped and the command
exits 0.

``--workers N`` (env ``WEB_CONCURRENCY``, default 1) with N > 1: this process becomes a
supervisor. It starts the embedded services (development only) and runs the startup
reconciliation once, binds the listening socket once, then starts N worker processes
(``serve --worker-fd``, fresh interpreters: no fork after gRPC threads exist) that each run
daphne on the inherited socket (daphne's Twisted endpoint ``fd:fileno=<n>``, IPv4) and the
background jobs, of which leader election lets exactly one lead. The kernel hands each new
connection to whichever worker accepts first. A worker that dies is logged and restarted;
SIGTERM/SIGINT stop every worker and the command exits 0. Several processes need a shared
channel layer (``REDIS_URL``) and a database shared between processes (PostgreSQL): without
them the command refuses to start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config import websocket_server

logger = logging.getLogger("trading_demo.serve")


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets with daphne, plus the background jobs and embedded services."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.HOST, help="listen address (env HOST)")
        parser.add_argument("--port", type=int, default=settings.PORT, help="port (env PORT)")
        parser.add_argument(
            "--no-jobs",
            action="store_true",
            help="do not run the market feed, outbox delivery and expiry jobs in this process",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=_default_workers(),
            help="serving processes sharing the port (env WEB_CONCURRENCY, default 1). More "
            "than 1 requires REDIS_URL (the in-memory channel layer is per process) and "
            "PostgreSQL (SQLite is refused); the background jobs' leader election runs them "
            "in one worker at a time",
        )
        # Internal: run as a worker of a `--workers N` supervisor on this inherited socket.
        parser.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument(
            "--seed-demo-if-empty",
            action="store_true",
            help="run `seed_demo --if-empty` once the embedded gRPC services are up (make run): "
            "the demo's pending approval must live in the oversight service this server uses",
        )

    def handle(
        self,
        *args,
        host: str,
        port: int,
        no_jobs: bool,
        seed_demo_if_empty: bool,
        workers: int,
        worker_fd: int | None,
        **options,
    ):
        if not 0 <= port <= 65535:
            raise CommandError(f"--port must be between 0 and 65535, got {port}")
        if worker_fd is not None:
            return self._run_worker(worker_fd, no_jobs=no_jobs)
        if workers < 1:
            raise CommandError(f"--workers must be at least 1, got {workers}")
        if workers > 1:
            _check_multiprocess()
            return self._supervise(
                host, port, workers, no_jobs=no_jobs, seed_demo_if_empty=seed_demo_if_empty
            )

        # Imported here: daphne installs the asyncio Twisted reactor on import.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from agents.services import reservations_reconcile
        from config.asgi import application
        from config.background import default_jobs
        from config.embedded import start_embedded_services

        services = start_embedded_services()
        if seed_demo_if_empty:
            from django.core.management import call_command

            try:
                call_command("seed_demo", if_empty=True, stdout=self.stdout, stderr=self.stderr)
            except Exception:
                if services is not None:
                    services.stop(grace=0)
                raise
        # Before any job or request moves money: holds left by a crash equal the live orders'.
        reservations_reconcile()
        jobs = [] if no_jobs else default_jobs()
        for job in jobs:
            job.start()

        server = Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            application_close_timeout=5,
            ready_callable=lambda: self._banner(host, port, services),
            verbosity=0,
        )
        _tune_gc()
        websocket_server.install()
        try:
            server.run()
        finally:
            self.stdout.write("Shutting down: stopping background jobs and gRPC services…")
            for job in jobs:
                job.stop()
            if services is not None:
                services.stop(grace=1.0)
            from grpc_clients.registry import reset_clients

            reset_clients()
            self.stdout.write("Stopped.")

    # --- several processes ---------------------------------------------------------------

    def _supervise(
        self, host: str, port: int, workers: int, *, no_jobs: bool, seed_demo_if_empty: bool
    ) -> None:
        from agents.services import reservations_reconcile
        from config.embedded import start_embedded_services

        services = start_embedded_services()
        pool: WorkerPool | None = None
        try:
            if seed_demo_if_empty:
                from django.core.management import call_command

                call_command("seed_demo", if_empty=True, stdout=self.stdout, stderr=self.stderr)
            # Once, before any worker serves or runs a job.
            reservations_reconcile()
            # The supervisor's own connections are not inherited by the workers (fresh
            # interpreters), but close them: it makes no more queries.
            from django.db import connections

            connections.close_all()

            listener = _listen(host, port)
            port = listener.getsockname()[1]
            manage = str(Path(settings.BASE_DIR) / "manage.py")
            command = [sys.executable, manage, "serve", "--worker-fd", str(listener.fileno())]
            if no_jobs:
                command.append("--no-jobs")
            pool = WorkerPool(command, listener, workers, logger=logger)
            stop = threading.Event()

            def on_signal(signum, _frame):
                logger.info("signal %s: stopping %d workers", signum, workers)
                stop.set()

            previous = {
                sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
            }
            try:
                pool.start()
                self._banner(host, port, services, workers=workers)
                while not stop.wait(0.5):
                    pool.reap_and_restart()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        finally:
            self.stdout.write("Shutting down: stopping workers and gRPC services…")
            if pool is not None:
                pool.stop()
            if services is not None:
                services.stop(grace=1.0)
            self.stdout.write("Stopped.")

    def _run_worker(self, fd: int, *, no_jobs: bool) -> None:
        from daphne.server import Server

        from config.asgi import application
        from config.background import default_jobs

        jobs = [] if no_jobs else default_jobs()
        for job in jobs:
            job.start()
        server = Server(
            application=application,
            # daphne's fd endpoint plugin adopts the socket as AF_INET (its ``domain`` argument
            # would arrive as the string "INET", which the reactor refuses: leave it out).
            endpoints=[f"fd:fileno={fd}"],
            signal_handlers=True,
            application_close_timeout=5,
            verbosity=0,
        )
        _tune_gc()
        websocket_server.install()
        try:
            server.run()
        finally:
            for job in jobs:
                job.stop()
            from grpc_clients.registry import reset_clients

            reset_clients()

    def _banner(self, host: str, port: int, services, *, workers: int = 1) -> None:
        shown = "localhost" if host in {"0.0.0.0", "::"} else host
        base = f"http://{shown}:{port}"
        line = "━" * 64
        # Per service: the server may embed one and find the other already served.
        metering = "embedded" if services and services.metering_address else "external"
        oversight = "embedded" if services and services.oversight_address else "external"
        rows = [
            ("HTTP Server", base),
            ("WebSocket", f"ws://{shown}:{port}/ws/"),
            ("API", f"{base}/api"),
            ("API Docs", f"{base}/api/docs/"),
            ("Dashboard", f"{base}/dashboard/"),
            ("Admin", f"{base}/admin/"),
            ("Health", f"{base}/health/live  ·  {base}/health/ready"),
            ("Metrics", f"{base}/metrics"),
            ("Metering gRPC", f"{settings.METERING_GRPC_ADDRESS} ({metering})"),
            ("Oversight gRPC", f"{settings.OVERSIGHT_GRPC_ADDRESS} ({oversight})"),
            ("Database", settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]),
            ("Channel layer", "redis" if settings.REDIS_URL else "in-memory"),
            ("Environment", settings.DJANGO_ENV),
            ("Workers", str(workers)),
        ]
        out = [line, f"  {settings.APP_NAME}", line]
        out += [f"  {label + ':':<16} {value}" for label, value in rows]
        demo = _demo_logins()
        if demo:
            out.append(line)
            out.append("  Demo logins (seed_demo):")
            out += [f"    {row}" for row in demo]
        out.append(line)
        self.stdout.write("\n".join(out))
        self.stdout.flush()


def _default_workers() -> int:
    raw = os.environ.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return 1
    try:
        return int(raw)
    except ValueError:
        raise CommandError(f"WEB_CONCURRENCY must be an integer, got {raw!r}") from None


def _check_multiprocess() -> None:
    """Several serving processes must share the channel layer and the database."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise CommandError(
            "--workers > 1 needs a database shared between processes: set DATABASE_URL to "
            "PostgreSQL (SQLite is one process's embedded default; serve it with --workers 1)"
        )
    if not settings.REDIS_URL:
        raise CommandError(
            "--workers > 1 needs REDIS_URL: the in-memory channel layer is per process, so a "
            "WebSocket client would miss the events of requests served by other workers"
        )


def _listen(host: str, port: int) -> socket.socket:
    try:
        # IPv4 only: daphne's fd endpoint adopts inherited sockets as AF_INET.
        infos = socket.getaddrinfo(
            host, port, socket.AF_INET, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1024)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port} (IPv4): {exc}") from exc
    listener.setblocking(False)
    listener.set_inheritable(True)
    return listener


class WorkerPool:
    """N ``serve --worker-fd`` processes on one listening socket, restarted when one dies."""

    RESTART_DELAY_SECONDS = 1.0

    def __init__(self, command: list[str], listener: socket.socket, size: int, *, logger):
        self.command = command
        self.listener = listener
        self.size = size
        self.logger = logger
        self.processes: list[subprocess.Popen | None] = [None] * size
        self._died_at: dict[int, float] = {}

    def _spawn(self, slot: int) -> None:
        self.processes[slot] = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            self.command,
            cwd=settings.BASE_DIR,
            pass_fds=(self.listener.fileno(),),
            # Not a new session: Ctrl-C in a terminal reaches every worker too.
        )
        self.logger.info("worker %d started (pid %d)", slot, self.processes[slot].pid)

    def start(self) -> None:
        for slot in range(self.size):
            self._spawn(slot)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p is not None and p.poll() is None]

    def reap_and_restart(self) -> None:
        now = time.monotonic()
        for slot, process in enumerate(self.processes):
            if process is None or process.poll() is None:
                continue
            died = self._died_at.setdefault(slot, now)
            if died == now:
                self.logger.error(
                    "worker %d (pid %d) exited with %s; restarting it",
                    slot,
                    process.pid,
                    process.returncode,
                )
            if now - died >= self.RESTART_DELAY_SECONDS:
                del self._died_at[slot]
                self._spawn(slot)

    def stop(self, timeout: float = 15.0) -> None:
        running = [p for p in self.processes if p is not None and p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.logger.warning("worker pid %d did not stop; killing it", process.pid)
                process.kill()
                process.wait()
        self.listener.close()


def _demo_logins() -> list[str]:
    try:
        from agents.demo import demo_logins
    except ImportError:
        return []
    try:
        return demo_logins()
    except Exception:
        logger.warning("could not read the demo logins", exc_info=True)
        return []


def _tune_gc() -> None:
    """Keep the garbage collector off the request path (settings ``GC_FREEZE``, ``GC_THRESHOLD``).

    What exists once the server is set up (Django, the URL and model registries, gRPC, daphne)
    lives as long as the process: ``gc.freeze()`` moves it out of the collector's sight, so a
    full collection no longer walks it. A higher first-generation threshold collects the
    short-lived objects of requests less often, in bigger batches. Measured on the 2-core
    machine (README, "Performance"): without this, collections took a fifth of the serving
    thread's time under load.
    """
    import gc

    threshold = settings.GC_THRESHOLD
    if threshold:
        gc.set_threshold(*threshold)
    if settings.GC_FREEZE:
        gc.collect()
        gc.freeze()
