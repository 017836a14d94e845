"""The usage outbox: written with the business change, delivered once, never lost."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import grpc
import pytest
from django.core.management import CommandError, call_command
from django.db import close_old_connections, connection
from django.utils import timezone

from grpc_clients.registry import get_metering_client, reset_clients
from metering.models import DeliveryState, UsageEvent
from metering.services import backoff_seconds, usage_deliver_pending, usage_record
from reference_services.server import start_reference_services

pytestmark = pytest.mark.django_db


def _delivered_for(agent, client=None) -> list:
    """What the metering service holds for the agent (StreamEvents), by transaction id."""
    client = client or get_metering_client()
    return [e for e in client.stream_events() if e.agent_id == str(agent.pk)]


def _record_some(agent, count: int, code: str = "api_calls") -> list[UsageEvent]:
    return [usage_record(agent=agent, code=code, quantity=1) for _ in range(count)]


def test_recorded_usage_is_delivered_once_however_often_delivery_runs(agent_factory):
    # given
    agent = agent_factory()
    usage_record(agent=agent, code="api_calls", quantity=1)
    usage_record(agent=agent, code="trade_volume", quantity=Decimal("1234.56"), symbol="AAPL")
    usage_record(agent=agent, code="oversight_requests", quantity=1, event_type="oversight_request")
    assert UsageEvent.objects.filter(agent=agent, delivery_state="pending").count() == 3

    # when
    first = usage_deliver_pending()
    second = usage_deliver_pending(ignore_backoff=True)

    # then
    assert first["delivered"] == 3
    assert first["remaining"] == 0
    assert second["delivered"] == second["duplicates"] == 0
    assert set(UsageEvent.objects.filter(agent=agent).values_list("delivery_state", flat=True)) == {
        "delivered"
    }
    remote = _delivered_for(agent)
    assert sorted((e.code, e.quantity) for e in remote) == [
        ("api_calls", 1),
        ("oversight_requests", 1),
        ("trade_volume", 1235),
    ]
    assert next(e for e in remote if e.code == "trade_volume").properties["symbol"] == "AAPL"
    status = get_metering_client().get_quota_status(agent_id=str(agent.pk), metric_code="api_calls")
    assert status.current_usage == 1


def test_a_lost_answer_is_resent_and_counted_once(agent_factory):
    # given: the service took the events but our marking was lost (rows still pending)
    agent = agent_factory()
    events = _record_some(agent, 3)
    usage_deliver_pending()
    UsageEvent.objects.filter(pk__in=[e.pk for e in events]).update(
        delivery_state=DeliveryState.PENDING, delivered_at=None
    )

    # when
    report = usage_deliver_pending()

    # then
    assert report["duplicates"] == 3
    assert report["delivered"] == 0
    status = get_metering_client().get_quota_status(agent_id=str(agent.pk), metric_code="api_calls")
    assert status.current_usage == 3


def test_outage_keeps_usage_pending_and_recovery_delivers_exactly_what_was_done(
    agent_factory, fresh_reference_services
):
    # given: some usage already delivered, then the metering service fails
    agent = agent_factory()
    _record_some(agent, 2)
    assert usage_deliver_pending()["delivered"] == 2
    fresh_reference_services.metering.fail_with = grpc.StatusCode.UNAVAILABLE
    _record_some(agent, 3)
    usage_record(agent=agent, code="trade_executions", quantity=1, symbol="MSFT")

    # when
    failed = usage_deliver_pending()

    # then: nothing lost, nothing marked, retry scheduled
    assert failed["service_unavailable"] is True
    assert failed["delivered"] == 0
    assert failed["remaining"] == 4
    pending = UsageEvent.objects.filter(agent=agent, delivery_state="pending")
    assert pending.count() == 4
    assert {e.attempts for e in pending} == {1}
    assert all(e.next_attempt_at > timezone.now() for e in pending)
    assert usage_deliver_pending()["remaining"] == 4  # backoff: not retried at once

    # when: the service is back, delivery runs (twice)
    fresh_reference_services.metering.fail_with = None
    recovered = usage_deliver_pending(ignore_backoff=True)
    again = usage_deliver_pending(ignore_backoff=True)

    # then: exactly what was recorded, no loss, no double count
    assert recovered["delivered"] == 4
    assert again["delivered"] == again["duplicates"] == 0
    client = get_metering_client()
    assert (
        client.get_quota_status(agent_id=str(agent.pk), metric_code="api_calls").current_usage == 5
    )
    status = client.get_quota_status(agent_id=str(agent.pk), metric_code="trade_executions")
    assert status.current_usage == 1
    remote = _delivered_for(agent)
    assert len(remote) == len({e.transaction_id for e in remote}) == 6


def test_metering_server_stopped_then_restarted_on_the_same_port(
    agent_factory, fresh_reference_services, settings
):
    # given: the metering server is down
    agent = agent_factory()
    port = fresh_reference_services.metering_port
    fresh_reference_services.stop(grace=0)
    recorded = _record_some(agent, 4)

    # when
    down = usage_deliver_pending()

    # then
    assert down["service_unavailable"] is True
    assert UsageEvent.objects.filter(agent=agent, delivery_state="pending").count() == 4

    # when: a new server listens on the same address
    restarted = start_reference_services(
        metering_address=f"127.0.0.1:{port}", oversight_address=None
    )
    try:
        reset_clients()
        first = usage_deliver_pending(ignore_backoff=True)
        second = usage_deliver_pending(ignore_backoff=True)

        # then
        assert first["delivered"] == 4
        assert second["delivered"] == second["duplicates"] == 0
        remote = _delivered_for(agent)
        assert sorted(e.transaction_id for e in remote) == sorted(
            e.transaction_id for e in recorded
        )
    finally:
        restarted.stop(grace=0)


def test_retry_backoff_is_exponential_and_capped_at_a_minute(
    agent_factory, fresh_reference_services
):
    # given
    agent = agent_factory()
    (event,) = _record_some(agent, 1)
    fresh_reference_services.metering.fail_with = grpc.StatusCode.UNAVAILABLE
    now = timezone.now()

    # when / then
    delays = []
    for _ in range(8):
        usage_deliver_pending(now=now, ignore_backoff=True)
        event.refresh_from_db()
        delays.append((event.next_attempt_at - now).total_seconds())
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert event.attempts == 8
    assert event.delivery_state == "pending"
    assert "UNAVAILABLE" in event.last_error
    assert [backoff_seconds(n) for n in (1, 2, 7, 100)] == [1, 2, 60, 60]


def test_an_event_the_service_refuses_is_rejected_and_the_rest_delivered(agent_factory):
    # given: an event whose quota property the metering service cannot accept
    agent = agent_factory()
    good = usage_record(agent=agent, code="api_calls", quantity=1)
    bad = usage_record(agent=agent, code="custom", quantity=1, properties={"quota_limit": "lots"})

    # when
    report = usage_deliver_pending()

    # then
    assert report["delivered"] == 1
    assert report["rejected"] == 1
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.delivery_state == "delivered"
    assert bad.delivery_state == "rejected"
    assert bad.ingest_status == "validation_error"
    assert "quota_limit" in bad.last_error


def test_old_usage_is_delivered_into_its_own_period(agent_factory):
    # given: usage recorded yesterday that never reached the service
    agent = agent_factory()
    usage_record(
        agent=agent, code="api_calls", quantity=7, occurred_at=timezone.now() - timedelta(days=1)
    )

    # when
    usage_deliver_pending()

    # then: it does not count against today's quota
    status = get_metering_client().get_quota_status(agent_id=str(agent.pk), metric_code="api_calls")
    assert status.current_usage == 0


def test_usage_record_refuses_negative_quantities_and_unknown_event_types(agent_factory):
    from django.core.exceptions import ValidationError

    agent = agent_factory()
    with pytest.raises(ValidationError):
        usage_record(agent=agent, code="api_calls", quantity=-1)
    with pytest.raises(ValidationError):
        usage_record(agent=agent, code="api_calls", quantity=1, event_type="trade")
    assert not UsageEvent.objects.filter(agent=agent, code="api_calls").exists()


def test_deliver_usage_command_reports_and_fails_loudly(agent_factory, fresh_reference_services):
    from io import StringIO

    # given
    agent = agent_factory()
    _record_some(agent, 3)

    # when: the service is up
    out = StringIO()
    call_command("deliver_usage", stdout=out)

    # then
    assert "Delivered 3 usage event(s)" in out.getvalue()
    assert "0 pending" in out.getvalue()

    # when: it is down
    _record_some(agent, 2)
    fresh_reference_services.metering.fail_with = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(CommandError) as failure:
        call_command("deliver_usage", stdout=StringIO())

    # then
    assert "2 pending" in str(failure.value)
    assert "UNAVAILABLE" in str(failure.value)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_deliverers_never_send_the_same_row(agent_factory, metering_client):
    # given
    agent = agent_factory()
    UsageEvent.objects.bulk_create(
        UsageEvent(
            transaction_id=f"concurrent-{agent.pk}-{n}",
            agent=agent,
            code="api_calls",
            quantity=1,
            occurred_at=timezone.now(),
        )
        for n in range(300)
    )
    reports = []
    barrier = threading.Barrier(3)

    def deliver():
        try:
            barrier.wait()
            reports.append(usage_deliver_pending(limit=1000, batch_size=20))
        finally:
            close_old_connections()

    # when
    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # then: every row sent once — no duplicates seen by the service
    assert sum(r["delivered"] for r in reports) == 300
    assert sum(r["duplicates"] for r in reports) == 0
    assert not UsageEvent.objects.filter(agent=agent, delivery_state="pending").exists()
    status = metering_client.get_quota_status(agent_id=str(agent.pk), metric_code="api_calls")
    assert status.current_usage == 300


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_sent_holding_row_locks_on_postgresql_and_no_write_lock_on_sqlite(
    agent_factory, monkeypatch
):
    # given: pending usage, and the real metering client watched as it sends
    agent = agent_factory()
    for _ in range(3):
        usage_record(agent=agent, code="api_calls", quantity=1)
    client = get_metering_client()
    send = client.ingest_batch
    in_transaction: list[bool] = []

    def watched(*args, **kwargs):
        in_transaction.append(connection.in_atomic_block)
        return send(*args, **kwargs)

    monkeypatch.setattr(client, "ingest_batch", watched)

    # when
    report = usage_deliver_pending()

    # then: on PostgreSQL the rows stay locked in a transaction during the call; on SQLite,
    # whose one write lock every order needs, no transaction is open during the call
    assert in_transaction == [connection.vendor == "postgresql"]
    assert report["delivered"] == 3 and report["remaining"] == 0
    assert not UsageEvent.objects.filter(delivery_state=DeliveryState.PENDING).exists()
