"""Failures of real reference servers (stopped, slowed, broken) as the wrappers report them."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest

from grpc_clients._channel import CallSlots
from grpc_clients.errors import (
    RemoteConflict,
    RemoteInvalidArgument,
    RemoteNotFound,
    ServiceUnavailable,
)
from grpc_clients.health import METERING_SERVICE_NAME, OVERSIGHT_SERVICE_NAME, check_health
from grpc_clients.metering import MeteringClient, UsageEvent
from grpc_clients.oversight import OversightClient
from reference_services.server import start_reference_services
from tests.helpers import free_port
from tests.reference import running_reference_services

TIMEOUT = 0.5


def check_quota(client: MeteringClient):
    return client.check_quota(agent_id="agent-1", metric_code="api_calls", quantity=1)


def holding_a_slot(pool: ThreadPoolExecutor, services, metering: MeteringClient):
    """A ``CheckQuota`` made in ``pool``, returned once the metering server has it waiting: the
    call holds its slot until the server's delay is over."""
    call = pool.submit(check_quota, metering)
    deadline = time.monotonic() + 5
    while services.metering.calls_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return call


def test_stopped_server_raises_service_unavailable_within_the_deadline():
    with running_reference_services() as services:
        metering = MeteringClient(services.metering_address, timeout=TIMEOUT)
        oversight = OversightClient(services.oversight_address, timeout=TIMEOUT)
        check_quota(metering)  # connected and working
    # the services are stopped now

    for call in (
        lambda: check_quota(metering),
        lambda: oversight.get_request_status("any"),
        lambda: oversight.approve(request_id="any", approver_id="op", approver_name="Op"),
    ):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            call()
        assert time.monotonic() - started < TIMEOUT + 0.5
        assert raised.value.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
        assert isinstance(raised.value.__cause__, grpc.RpcError)  # kept for debugging
    metering.close()
    oversight.close()


def test_nothing_listening_raises_service_unavailable():
    client = MeteringClient(f"127.0.0.1:{free_port()}", timeout=TIMEOUT)
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable) as raised:
        check_quota(client)

    assert time.monotonic() - started < TIMEOUT + 0.5
    assert (raised.value.service, raised.value.method) == ("metering", "CheckQuota")
    client.close()


def test_slowed_server_past_the_deadline_raises_service_unavailable(services):
    services.metering.delay_seconds = 3.0
    client = MeteringClient(services.metering_address, timeout=0.3)
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable) as raised:
        check_quota(client)

    assert time.monotonic() - started < 0.3 + 0.5
    assert raised.value.code == "DEADLINE_EXCEEDED"
    client.close()


def test_a_call_beyond_the_slots_in_flight_fails_after_its_wait_without_reaching_the_server(
    services,
):
    # given: two clients sharing one call slot, one of them waiting on a slowed server, and
    # a wait for a slot much shorter than that server's delay
    slots = CallSlots(1, wait_seconds=0.2)
    metering = MeteringClient(services.metering_address, timeout=5.0, call_slots=slots)
    oversight = OversightClient(services.oversight_address, timeout=5.0, call_slots=slots)
    check_quota(metering)  # connected
    services.metering.delay_seconds = 2.0
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = holding_a_slot(pool, services, metering)

        # when: another call is made meanwhile, to either service
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            oversight.list_requests()
        failed_after = time.monotonic() - started
        still_waiting = services.metering.calls_waiting

        # then: it failed once its wait for a slot was over, before the waiting call returned,
        # and the slot serves again after
        assert raised.value.code == "RESOURCE_EXHAUSTED"
        assert 0.2 <= failed_after < 1.5
        assert still_waiting == 1
        assert waiting.result(timeout=5).allowed
    services.metering.delay_seconds = 0
    oversight.list_requests()
    metering.close()
    oversight.close()


def test_a_call_beyond_the_slots_in_flight_waits_for_one_freed_by_a_healthy_call(services):
    # given: two clients sharing one call slot; the server takes a moment with every call, as
    # a busy but healthy service does
    slots = CallSlots(1, wait_seconds=2.0)
    metering = MeteringClient(services.metering_address, timeout=5.0, call_slots=slots)
    oversight = OversightClient(services.oversight_address, timeout=5.0, call_slots=slots)
    check_quota(metering)  # connected
    oversight.list_requests()
    services.metering.delay_seconds = 0.3
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = holding_a_slot(pool, services, metering)

        # when: another call is made while the first holds the slot
        started = time.monotonic()
        oversight.list_requests()
        answered_after = time.monotonic() - started

        # then: it waited for the slot, the rest of the first call's delay, and was answered;
        # so was the first
        assert 0.1 <= answered_after < 2.0
        assert first.result(timeout=5).allowed
    services.metering.delay_seconds = 0
    metering.close()
    oversight.close()


def test_the_wait_for_a_slot_is_part_of_the_calls_deadline(services):
    # given: one slot, held for a while by a call to a slowed metering server, and an
    # oversight server that answers only after a delay of its own
    slots = CallSlots(1, wait_seconds=5.0)
    metering = MeteringClient(services.metering_address, timeout=5.0, call_slots=slots)
    oversight = OversightClient(services.oversight_address, timeout=0.6, call_slots=slots)
    check_quota(metering)  # connected
    oversight.list_requests()
    services.metering.delay_seconds = 0.4
    services.oversight.delay_seconds = 0.4
    with ThreadPoolExecutor(max_workers=1) as pool:
        holding = holding_a_slot(pool, services, metering)

        # when: an oversight call with a 0.6 s deadline waits for the slot, then for the server
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            oversight.list_requests()
        failed_after = time.monotonic() - started

        # then: it fails at its deadline, counted from when it was made, not from the slot
        assert raised.value.code == "DEADLINE_EXCEEDED"
        assert failed_after < 0.6 + 0.25
        assert holding.result(timeout=5).allowed
    services.metering.delay_seconds = 0
    services.oversight.delay_seconds = 0
    metering.close()
    oversight.close()


def test_without_a_wait_a_call_beyond_the_slots_fails_at_once(services):
    # given: one slot, no wait for it, and a call holding it on a slowed server
    slots = CallSlots(1)
    metering = MeteringClient(services.metering_address, timeout=5.0, call_slots=slots)
    check_quota(metering)  # connected
    services.metering.delay_seconds = 1.0
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = holding_a_slot(pool, services, metering)

        # when / then: another call fails before the first is answered
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            check_quota(metering)
        assert raised.value.code == "RESOURCE_EXHAUSTED"
        assert time.monotonic() - started < 0.5
        assert services.metering.calls_waiting == 1
        assert waiting.result(timeout=5).allowed
    services.metering.delay_seconds = 0
    metering.close()


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.INTERNAL, ServiceUnavailable),
        (grpc.StatusCode.UNKNOWN, ServiceUnavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ServiceUnavailable),
        (grpc.StatusCode.UNIMPLEMENTED, ServiceUnavailable),
        (grpc.StatusCode.NOT_FOUND, RemoteNotFound),
        (grpc.StatusCode.ABORTED, RemoteConflict),
        (grpc.StatusCode.INVALID_ARGUMENT, RemoteInvalidArgument),
    ],
)
def test_broken_server_status_is_mapped(services, oversight_client, code, error_class):
    services.oversight.fail_with = code

    with pytest.raises(error_class) as raised:
        oversight_client.list_requests()

    assert type(raised.value) is error_class
    assert (raised.value.service, raised.value.method, raised.value.code) == (
        "oversight",
        "ListRequests",
        code.name,
    )
    assert "injected failure" in raised.value.detail


def test_unreadable_response_is_service_unavailable():
    garbage = grpc.unary_unary_rpc_method_handler(lambda request, context: b"\xff\xff\xff\xff")
    server = grpc.server(ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(METERING_SERVICE_NAME, {"CheckQuota": garbage})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = MeteringClient(f"127.0.0.1:{port}", timeout=TIMEOUT)
    try:
        with pytest.raises(ServiceUnavailable):
            check_quota(client)
    finally:
        client.close()
        server.stop(0)


def calls_logged(caplog, logger: str, method: str) -> int:
    return sum(1 for r in caplog.records if r.name == logger and r.getMessage().startswith(method))


def test_unavailable_is_retried_for_idempotent_calls_only(services, caplog):
    caplog.set_level(logging.DEBUG, logger="reference_services")
    client = OversightClient(services.oversight_address, timeout=2.0)
    client.list_requests()  # connect first, so only server answers are counted
    services.oversight.fail_with = grpc.StatusCode.UNAVAILABLE

    with pytest.raises(ServiceUnavailable):
        client.get_request_status("r-1")
    with pytest.raises(ServiceUnavailable):
        client.approve(request_id="r-1", approver_id="op", approver_name="Op")

    assert calls_logged(caplog, "reference_services.oversight", "GetRequestStatus") == 3
    assert calls_logged(caplog, "reference_services.oversight", "ApproveRequest") == 1
    client.close()


def test_request_id_metadata_reaches_both_servers(services, caplog):
    caplog.set_level(logging.DEBUG, logger="reference_services")
    metering = MeteringClient(
        services.metering_address, timeout=TIMEOUT, request_id_provider=lambda: "req-123"
    )
    oversight = OversightClient(
        services.oversight_address, timeout=TIMEOUT, request_id_provider=lambda: "req-456"
    )
    anonymous = MeteringClient(
        services.metering_address, timeout=TIMEOUT, request_id_provider=lambda: None
    )

    metering.ingest_event(
        UsageEvent(transaction_id="tx", agent_id="a", code="api_calls", quantity=1)
    )
    oversight.list_requests()
    check_quota(anonymous)

    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("reference_services.metering", "IngestEvent request_id=req-123") in messages
    assert ("reference_services.oversight", "ListRequests request_id=req-456") in messages
    assert ("reference_services.metering", "CheckQuota request_id=-") in messages
    for client in (metering, oversight, anonymous):
        client.close()


def test_call_hook_observes_every_outcome(services):
    calls = []
    client = OversightClient(
        services.oversight_address,
        timeout=TIMEOUT,
        on_call=lambda *args: calls.append(args),
    )
    client.list_requests()
    with pytest.raises(RemoteNotFound):
        client.get_request_status("missing")

    assert [call[:3] for call in calls] == [
        ("oversight", "ListRequests", "OK"),
        ("oversight", "GetRequestStatus", "NOT_FOUND"),
    ]
    assert all(0 <= call[3] < TIMEOUT for call in calls)
    client.close()


def test_failing_call_hook_does_not_break_the_call(services, caplog):
    def broken_hook(*_args):
        raise RuntimeError("metrics backend gone")

    client = OversightClient(services.oversight_address, timeout=TIMEOUT, on_call=broken_hook)

    assert client.list_requests().total_count == 0
    assert "call hook failed" in caplog.text
    client.close()


def test_health_check_reports_serving_services_and_never_raises():
    with running_reference_services() as services:
        metering_up = check_health(services.metering_address, METERING_SERVICE_NAME, timeout=1.0)
        oversight_up = check_health(services.oversight_address, OVERSIGHT_SERVICE_NAME, timeout=1.0)
        wrong_service = check_health(services.metering_address, "no.such.Service", timeout=1.0)
        address = services.metering_address
    stopped = check_health(address, METERING_SERVICE_NAME, timeout=0.5)
    nothing = check_health(f"127.0.0.1:{free_port()}", METERING_SERVICE_NAME, timeout=0.5)
    bad_address = check_health("not an address", METERING_SERVICE_NAME, timeout=0.5)

    assert (metering_up, oversight_up) == (True, True)
    assert (wrong_service, stopped, nothing, bad_address) == (False, False, False, False)


def test_taken_port_fails_loudly():
    with running_reference_services() as services, pytest.raises(OSError, match="cannot listen"):
        start_reference_services(oversight_address=services.oversight_address)


def test_submit_with_timeout_is_sent_as_duration(services, oversight_client):
    result = oversight_client.submit_request(
        request_id="r-1",
        agent_id="a",
        agent_name="A",
        tenant_id="t",
        subject="s",
        description="d",
        parameters={
            "notional": "20000",
            "budget": "100000",
            "auto_approval_limit": "10000",
            "approval_budget_fraction": "0.25",
        },
        risk_level="high",
        priority="critical",
        timeout=timedelta(milliseconds=1),
        tags=("trade",),
        metadata={"trade_id": "t-1"},
    )
    time.sleep(0.05)

    assert result.state == "pending"
    assert oversight_client.get_request_status("r-1").state == "expired"


def test_calls_under_one_budget_share_one_deadline_from_the_first_call(services):
    from grpc_clients.registry import deadline_budget

    client = MeteringClient(services.metering_address, timeout=2.0)
    with deadline_budget(0.5):
        # time before the first call (e.g. waiting for a row lock) is not charged
        time.sleep(0.6)
        check_quota(client)
        # the second call gets only what the first left
        services.metering.delay_seconds = 0.3
        check_quota(client)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            check_quota(client)
        assert time.monotonic() - started < 0.3
        assert raised.value.code == "DEADLINE_EXCEEDED"
    client.close()
