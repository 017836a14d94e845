"""``manage.py run_reference_services``: the reference metering and oversight gRPC servers.

The same servers ``python -m reference_services`` runs (state in memory), with defaults taken
from the settings' ``METERING_GRPC_ADDRESS`` / ``OVERSIGHT_GRPC_ADDRESS`` ports so a server
started with ``EMBEDDED_SERVICES=false`` finds them. Stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def _listen_address(address: str, option: str) -> str:
    """``host:port`` with a valid port; ``localhost`` binds loopback, an empty host all."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CommandError(f"{option} must be HOST:PORT with a port 0-65535, got {address!r}")
    if host in {"", "*"}:
        host = "0.0.0.0"
    elif host == "localhost":
        host = "127.0.0.1"
    return f"{host}:{int(port)}"


def _default(address: str) -> str:
    return "0.0.0.0:" + address.rpartition(":")[2]


class Command(BaseCommand):
    help = (
        "Run the reference Creto metering and oversight gRPC services (plain Python, state in "
        "memory) until Ctrl-C/SIGTERM. Point the server at them with METERING_GRPC_ADDRESS and "
        "OVERSIGHT_GRPC_ADDRESS, and EMBEDDED_SERVICES=false."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--metering",
            default=_default(settings.METERING_GRPC_ADDRESS),
            help="metering listen address HOST:PORT (default: all interfaces, the port of "
            "METERING_GRPC_ADDRESS)",
        )
        parser.add_argument(
            "--oversight",
            default=_default(settings.OVERSIGHT_GRPC_ADDRESS),
            help="oversight listen address HOST:PORT (default: all interfaces, the port of "
            "OVERSIGHT_GRPC_ADDRESS)",
        )
        parser.add_argument(
            "--oversight-standard",
            action="store_true",
            help="serve only Creto's standard oversight rpcs (CancelRequest answers UNIMPLEMENTED)",
        )
        parser.add_argument(
            "--grace", type=float, default=2.0, help="seconds to drain calls on shutdown"
        )

    def handle(
        self,
        *args,
        metering: str,
        oversight: str,
        grace: float,
        oversight_standard: bool = False,
        **options,
    ):
        from reference_services.server import start_reference_services

        metering = _listen_address(metering, "--metering")
        oversight = _listen_address(oversight, "--oversight")
        if grace < 0:
            raise CommandError(f"--grace must not be negative, got {grace}")

        stop = threading.Event()

        def request_stop(signum, _frame) -> None:
            self.stdout.write(f"{signal.Signals(signum).name} received; stopping.")
            stop.set()

        previous = {
            signum: signal.signal(signum, request_stop)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            try:
                services = start_reference_services(
                    metering, oversight, oversight_extensions=not oversight_standard
                )
            except OSError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(
                f"Metering gRPC on {services.metering_address}, oversight gRPC on "
                f"{services.oversight_address} (state in memory). Ctrl-C to stop."
            )
            self.stdout.flush()
            while not stop.wait(0.5):
                pass
            services.stop(grace)
            self.stdout.write("Reference services stopped.")
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
