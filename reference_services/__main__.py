"""Run the reference metering and oversight services until SIGINT or SIGTERM.

python -m reference_services --metering 0.0.0.0:50051 --oversight 0.0.0.0:50052
python -m reference_services --metering 0.0.0.0:50051 --oversight none   # metering only
python -m reference_services --oversight-standard   # oversight without the CancelRequest extension
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .server import start_reference_services

logger = logging.getLogger("reference_services")


def _address(value: str) -> str | None:
    """A listen address, or None for 'none'/'off' (one container per service)."""
    return None if value.strip().lower() in {"none", "off", ""} else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_services",
        description="Reference Creto metering and oversight gRPC services (state in memory).",
    )
    parser.add_argument(
        "--metering",
        type=_address,
        default="0.0.0.0:50051",
        help="metering listen address, or 'none' not to run it",
    )
    parser.add_argument(
        "--oversight",
        type=_address,
        default="0.0.0.0:50052",
        help="oversight listen address, or 'none' not to run it",
    )
    parser.add_argument(
        "--oversight-standard",
        action="store_true",
        help="serve only Creto's standard oversight rpcs: CancelRequest answers UNIMPLEMENTED",
    )
    parser.add_argument("--grace", type=float, default=2.0, help="seconds to drain on shutdown")
    args = parser.parse_args(argv)
    if args.metering is None and args.oversight is None:
        parser.error("at least one of --metering and --oversight must be an address")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    stop_requested = threading.Event()

    def request_stop(signum, _frame) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        services = start_reference_services(
            args.metering, args.oversight, oversight_extensions=not args.oversight_standard
        )
    except OSError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("reference services ready (state in memory); Ctrl-C to stop")
    while not stop_requested.wait(0.5):
        pass
    services.stop(args.grace)
    logger.info("reference services stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
