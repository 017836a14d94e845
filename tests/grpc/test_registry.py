"""Process-wide clients built from Django settings."""

from __future__ import annotations

import threading

import pytest

from grpc_clients.metering import MeteringClient
from grpc_clients.registry import get_metering_client, get_oversight_client, reset_clients

recorded_calls: list[tuple] = []


def record_call(service: str, method: str, code: str, seconds: float) -> None:
    recorded_calls.append((service, method, code))


def current_request_id() -> str:
    return "registry-req"


@pytest.fixture
def registry_settings(settings, services):
    settings.METERING_GRPC_ADDRESS = services.metering_address
    settings.OVERSIGHT_GRPC_ADDRESS = services.oversight_address
    settings.GRPC_TIMEOUT_SECONDS = 0.75
    settings.GRPC_CALL_HOOK = f"{__name__}.record_call"
    settings.GRPC_REQUEST_ID_PROVIDER = f"{__name__}.current_request_id"
    reset_clients()
    recorded_calls.clear()
    yield settings
    reset_clients()


def test_clients_are_shared_built_from_settings_and_reset(registry_settings, caplog):
    caplog.set_level("DEBUG", logger="reference_services")
    metering = get_metering_client()

    decision = metering.check_quota(agent_id="a", metric_code="api_calls", quantity=1)
    assert get_oversight_client().list_requests().total_count == 0

    assert get_metering_client() is metering
    assert decision.allowed
    assert recorded_calls == [
        ("metering", "CheckQuota", "OK"),
        ("oversight", "ListRequests", "OK"),
    ]
    assert "CheckQuota request_id=registry-req" in caplog.text
    reset_clients()
    assert get_metering_client() is not metering


def test_concurrent_first_use_builds_one_client(registry_settings):
    seen: list[MeteringClient] = []
    barrier = threading.Barrier(8)

    def grab():
        barrier.wait()
        seen.append(get_metering_client())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)

    assert len(seen) == 8
    assert len({id(client) for client in seen}) == 1
