"""Process-wide gRPC clients built lazily from Django settings.

Settings: METERING_GRPC_ADDRESS, OVERSIGHT_GRPC_ADDRESS, GRPC_TIMEOUT_SECONDS (float),
GRPC_MAX_CALLS_IN_FLIGHT (int, 0: no limit; the clients share it, see `CallSlots`),
GRPC_CALL_SLOT_WAIT_SECONDS (float, how long a call waits for a slot),
GRPC_CALL_HOOK and GRPC_REQUEST_ID_PROVIDER (dotted paths or None). One client, hence one
channel, per service per process; `reset_clients()` closes them so the next call rebuilds
them from the current settings (tests do this after pointing settings at new ports).
"""

from __future__ import annotations

import threading
from typing import Any

from ._channel import CallSlots, deadline_budget
from .metering import MeteringClient
from .oversight import OversightClient

__all__ = ["deadline_budget", "get_metering_client", "get_oversight_client", "reset_clients"]

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_call_slots: CallSlots | None = None


def _client_options() -> dict[str, Any]:
    from django.conf import settings
    from django.utils.module_loading import import_string

    hook = settings.GRPC_CALL_HOOK
    provider = settings.GRPC_REQUEST_ID_PROVIDER
    return {
        "timeout": float(settings.GRPC_TIMEOUT_SECONDS),
        "on_call": import_string(hook) if hook else None,
        "request_id_provider": import_string(provider) if provider else None,
        "call_slots": _shared_call_slots(),
    }


def _shared_call_slots() -> CallSlots:
    """The slots both clients share (built under ``_lock``, with the first client)."""
    global _call_slots
    if _call_slots is None:
        from django.conf import settings

        _call_slots = CallSlots(
            int(settings.GRPC_MAX_CALLS_IN_FLIGHT), float(settings.GRPC_CALL_SLOT_WAIT_SECONDS)
        )
    return _call_slots


def _get(name: str, build):
    client = _clients.get(name)
    if client is None:
        with _lock:
            client = _clients.get(name)
            if client is None:
                client = _clients[name] = build()
    return client


def get_metering_client() -> MeteringClient:
    def build() -> MeteringClient:
        from django.conf import settings

        return MeteringClient(settings.METERING_GRPC_ADDRESS, **_client_options())

    return _get("metering", build)


def get_oversight_client() -> OversightClient:
    def build() -> OversightClient:
        from django.conf import settings

        return OversightClient(settings.OVERSIGHT_GRPC_ADDRESS, **_client_options())

    return _get("oversight", build)


def reset_clients() -> None:
    """Close and forget the clients; the next get_* call builds new ones from settings."""
    global _call_slots
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
        _call_slots = None
    for client in clients:
        client.close()
