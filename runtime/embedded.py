"""Start the reference gRPC services inside the serving process when nothing else serves them."""

from __future__ import annotations

import logging
import socket

from django.conf import settings

logger = logging.getLogger("trading_demo.embedded")


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


def _bind_address(address: str) -> str:
    host, _, port = address.rpartition(":")
    if host in {"localhost", ""}:
        host = "127.0.0.1"
    return f"{host}:{port}"


def start_embedded_services():
    """Start the reference services whose address nothing listens on; return a handle or None.

    Only when ``EMBEDDED_SERVICES`` is on. Addresses already served (a standalone
    ``run_reference_services`` or the real Creto services) are left alone. An embedded
    metering service starts with its state empty: once it listens, every live agent's
    ``daily_trade_limit`` hint is sent to it again (``METERING_QUOTA_HINTS``), or the demo
    agents of an already seeded database would be held to its default quota after a restart.
    """
    if not settings.EMBEDDED_SERVICES:
        return None
    from reference_services.server import start_reference_services

    wanted = {}
    for name, address in (
        ("metering", settings.METERING_GRPC_ADDRESS),
        ("oversight", settings.OVERSIGHT_GRPC_ADDRESS),
    ):
        if _listening(address):
            logger.info("%s service already listening on %s; not embedding it", name, address)
        else:
            wanted[name] = _bind_address(address)
    if not wanted:
        return None
    handle = start_reference_services(
        metering_address=wanted.get("metering"),
        oversight_address=wanted.get("oversight"),
    )
    logger.info("embedded reference services started: %s", ", ".join(sorted(wanted)))
    if handle.metering_address and settings.METERING_QUOTA_HINTS:
        from agents.services import agent_quota_hints_resend

        try:
            sent = agent_quota_hints_resend()
        except BaseException:
            handle.stop(grace=0)
            raise
        logger.info("daily trade limits of %d agents sent to the embedded metering service", sent)
    return handle
