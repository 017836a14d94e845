"""``manage.py serve``: the whole server in one process on one port, as ``make run`` starts it.

Starts, in this order: the embedded reference gRPC services (when ``EMBEDDED_SERVICES`` is on
and nothing listens on their addresses), the demo data with ``--seed-demo-if-empty``, the
reconciliation of reservations, the background jobs (threads of this process), then daphne
serving ``config.asgi:application`` (HTTP, WebSockets, static files) on ``HOST:PORT``, through
daphne's own ``Server`` as its ``runserver`` does. SIGINT/SIGTERM stop daphne; the jobs and the
gRPC services are then stopped and the command exits 0.

One process needs nothing shared: SQLite and the in-memory channel layer do. Production runs
HTTP (gunicorn), WebSockets (daphne) and the jobs (``run_jobs``) as processes of their own
(``compose.yaml``).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from api.limits import limits_summary

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
            "--seed-demo-if-empty",
            action="store_true",
            help="run `seed_demo --if-empty` once the embedded gRPC services are up (make run): "
            "the demo's pending approval must live in the oversight service this server uses",
        )

    def handle(self, *args, host: str, port: int, no_jobs: bool, seed_demo_if_empty: bool, **_):
        if not 0 <= port <= 65535:
            raise CommandError(f"--port must be between 0 and 65535, got {port}")

        # Imported here: daphne installs the asyncio Twisted reactor on import.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from config.asgi import application
        from runtime.embedded import start_embedded_services
        from runtime.jobs import default_jobs
        from runtime.memory import freeze_startup_objects
        from trades.services import reservations_reconcile

        services = start_embedded_services()
        jobs = []
        demo_agents = None
        try:
            if seed_demo_if_empty:
                from django.core.management import call_command

                # The banner prints the logins: once, at the end of the start-up output.
                call_command(
                    "seed_demo",
                    if_empty=True,
                    no_logins=True,
                    stdout=self.stdout,
                    stderr=self.stderr,
                )
            # Before any job or request moves money: holds left by a crash equal the live orders'.
            reservations_reconcile()
            jobs = [] if no_jobs else default_jobs()
            for job in jobs:
                job.start()
            demo_agents = _demo_agents(host, port) if seed_demo_if_empty else None
            # Everything is loaded: leave it out of the garbage collector's walks.
            freeze_startup_objects()
            server = Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                signal_handlers=True,
                application_close_timeout=5,
                ready_callable=lambda: self._ready(host, port, services, demo_agents),
                verbosity=0,
            )
            server.run()
        finally:
            if demo_agents is not None:
                demo_agents.stop()
            self.stdout.write("Shutting down: stopping background jobs and gRPC services…")
            for job in jobs:
                job.stop()
            if services is not None:
                services.stop(grace=1.0)
            from grpc_clients.registry import reset_clients

            reset_clients()
            self.stdout.write("Stopped.")

    def _ready(self, host: str, port: int, services, demo_agents) -> None:
        """Once daphne listens: the banner, then the demo agents' runner (a client of it)."""
        self._banner(host, port, services, demo_agents=demo_agents)
        if demo_agents is not None:
            demo_agents.start()

    def _banner(self, host: str, port: int, services, *, demo_agents=None) -> None:
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
            ("Rate limits", limits_summary()),
            ("Environment", settings.DJANGO_ENV),
        ]
        out = [line, f"  {settings.APP_NAME}", line]
        out += [f"  {label + ':':<16} {value}" for label, value in rows]
        demo = _demo_logins()
        if demo_agents is not None:
            out.append(
                f"  {'Demo agents:':<16} trading by their strategies (run_agents); "
                "DEMO_AGENTS=false turns them off"
            )
        elif demo and not settings.DEMO_AGENTS:
            out.append(f"  {'Demo agents:':<16} idle (DEMO_AGENTS=false)")
        if demo:
            out.append(line)
            out.append("  Demo logins (seed_demo):")
            out += [f"    {row}" for row in demo]
        out.append(line)
        self.stdout.write("\n".join(out))
        self.stdout.flush()


def _demo_agents(host: str, port: int):
    """The runner of the seeded demo agents (``make run``), unless ``DEMO_AGENTS`` is off or
    nothing was seeded; it reaches this server over loopback like any client."""
    from agents.demo import DemoAgents

    if not settings.DEMO_AGENTS or not _demo_logins():
        return None
    if host in {"", "0.0.0.0", "::"}:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return DemoAgents(f"http://{host}:{port}")


def _demo_logins() -> list[str]:
    from agents.demo import demo_logins

    try:
        return demo_logins()
    except Exception:
        logger.warning("could not read the demo logins", exc_info=True)
        return []
