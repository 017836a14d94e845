"""The metering wrapper against the reference metering service on an ephemeral port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from grpc_clients.errors import RemoteInvalidArgument
from grpc_clients.metering import USAGE_EVENT_TYPES, MeteringClient, UsageEvent
from reference_services.metering import DAILY, HOURLY, MONTHLY, WEEKLY
from tests.reference import running_reference_services


def event(tx: str, *, agent: str = "agent-1", code: str = "api_calls", quantity: int = 1, **kw):
    return UsageEvent(transaction_id=tx, agent_id=agent, code=code, quantity=quantity, **kw)


def usage(client: MeteringClient, agent: str = "agent-1", code: str = "api_calls") -> int:
    return client.get_quota_status(agent_id=agent, metric_code=code).current_usage


def test_event_types_are_the_creto_names():
    assert USAGE_EVENT_TYPES[0] == "api_call"
    assert {"llm_inference", "oversight_request", "message_sent"} <= set(USAGE_EVENT_TYPES)
    assert "unspecified" not in USAGE_EVENT_TYPES


def test_repeated_transaction_id_is_duplicate_and_counted_once(metering_client):
    # given
    first = metering_client.ingest_event(event("tx-1", quantity=3))
    # when
    again = metering_client.ingest_event(event("tx-1", quantity=3))
    # then
    assert (first.status, again.status) == ("accepted", "duplicate")
    assert usage(metering_client) == 3


def test_batch_reports_each_event_in_order_and_counts_duplicates_once(metering_client):
    metering_client.ingest_event(event("tx-0"))

    result = metering_client.ingest_batch(
        [event("tx-1"), event("tx-0"), event("tx-2", quantity=-1), event("tx-1"), event("tx-3")]
    )

    assert [r.status for r in result.results] == [
        "accepted",
        "duplicate",
        "validation_error",
        "duplicate",
        "accepted",
    ]
    assert (result.accepted_count, result.duplicate_count, result.failed_count) == (2, 2, 1)
    assert "quantity" in result.results[2].error_message
    assert usage(metering_client) == 3


def test_batch_stops_at_first_failure_without_continue_on_error(metering_client):
    result = metering_client.ingest_batch(
        [event("tx-1"), event("", quantity=1), event("tx-2")], continue_on_error=False
    )

    assert [r.status for r in result.results] == [
        "accepted",
        "validation_error",
        "validation_error",
    ]
    assert "skipped" in result.results[2].error_message
    assert result.failed_count == 2
    assert usage(metering_client) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"transaction_id": ""}, "transaction_id"),
        ({"agent_id": ""}, "agent_id"),
        ({"code": ""}, "code"),
        ({"quantity": -5}, "quantity"),
        ({"properties": {"quota_limit": "ten"}}, "quota_limit"),
        ({"properties": {"quota_limit": "5", "quota_period": "yearly"}}, "quota_period"),
    ],
)
def test_invalid_event_is_refused_and_not_counted(metering_client, overrides, message):
    fields = {"transaction_id": "tx-1", "agent_id": "agent-1", "code": "api_calls", "quantity": 1}
    fields.update(overrides)

    result = metering_client.ingest_event(UsageEvent(**fields))

    assert result.status == "validation_error"
    assert message in result.error_message
    assert usage(metering_client) == 0


def test_quota_exhausted_denies_with_nothing_remaining(metering_client):
    # given: trade_executions defaults to 100 a day
    metering_client.ingest_event(event("tx-1", code="trade_executions", quantity=99))
    before = metering_client.check_quota(
        agent_id="agent-1", metric_code="trade_executions", quantity=1
    )
    metering_client.ingest_event(event("tx-2", code="trade_executions", quantity=1))

    # when
    after = metering_client.check_quota(
        agent_id="agent-1", metric_code="trade_executions", quantity=1
    )

    # then
    assert (before.allowed, before.remaining, before.limit) == (True, 1, 100)
    assert (after.allowed, after.remaining, after.current_usage) == (False, 0, 100)
    assert "trade_executions" in after.denial_reason
    other = metering_client.check_quota(
        agent_id="agent-2", metric_code="trade_executions", quantity=1
    )
    assert other.allowed


def test_quota_status_reports_usage_percentage(metering_client):
    metering_client.ingest_event(event("tx-1", code="trade_executions", quantity=25))

    status = metering_client.get_quota_status(agent_id="agent-1", metric_code="trade_executions")

    assert (status.limit, status.current_usage, status.remaining) == (100, 25, 75)
    assert status.usage_percentage == pytest.approx(25.0)
    assert status.period == "daily"
    assert status.period_start.tzinfo is not None
    assert status.period_end - status.period_start == timedelta(days=1)


def test_event_properties_set_a_per_agent_limit(metering_client):
    # given: a pure configuration event (quantity 0)
    config = event(
        "cfg-1",
        code="trade_executions",
        quantity=0,
        properties={"quota_limit": "2", "quota_period": "hourly"},
    )
    assert metering_client.ingest_event(config).status == "accepted"
    metering_client.ingest_event(event("tx-1", code="trade_executions", quantity=2))

    # when
    decision = metering_client.check_quota(
        agent_id="agent-1", metric_code="trade_executions", quantity=1
    )
    status = metering_client.get_quota_status(agent_id="agent-1", metric_code="trade_executions")
    untouched = metering_client.get_quota_status(agent_id="agent-2", metric_code="trade_executions")

    # then
    assert (decision.allowed, decision.limit, decision.current_usage) == (False, 2, 2)
    assert (status.limit, status.period) == (2, "hourly")
    assert (untouched.limit, untouched.period) == (100, "daily")


def test_quota_limit_without_period_keeps_the_metric_period(metering_client):
    metering_client.ingest_event(
        event("cfg-1", code="api_calls", quantity=0, properties={"quota_limit": "7"})
    )

    status = metering_client.get_quota_status(agent_id="agent-1", metric_code="api_calls")

    assert (status.limit, status.period, status.current_usage) == (7, "daily", 0)


def test_metric_without_a_limit_is_unlimited(metering_client):
    metering_client.ingest_event(event("tx-1", code="llm_tokens", quantity=10_000_000))

    decision = metering_client.check_quota(agent_id="agent-1", metric_code="llm_tokens", quantity=5)
    status = metering_client.get_quota_status(agent_id="agent-1", metric_code="llm_tokens")

    assert (decision.allowed, decision.limit) == (True, 0)
    assert (status.limit, status.usage_percentage, status.period) == (0, 0.0, "unspecified")
    assert status.current_usage == 10_000_000
    assert status.period_start is None and status.period_end is None


def test_check_quota_without_agent_is_invalid(metering_client):
    with pytest.raises(RemoteInvalidArgument) as raised:
        metering_client.check_quota(agent_id="", metric_code="api_calls", quantity=1)
    assert (raised.value.service, raised.value.method) == ("metering", "CheckQuota")


NOW = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("period", "start", "end", "expected_usage"),
    [
        (HOURLY, datetime(2025, 1, 15, 10, tzinfo=UTC), datetime(2025, 1, 15, 11, tzinfo=UTC), 1),
        (DAILY, datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 1, 16, tzinfo=UTC), 2),
        (WEEKLY, datetime(2025, 1, 13, tzinfo=UTC), datetime(2025, 1, 20, tzinfo=UTC), 3),
        (MONTHLY, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC), 4),
    ],
)
def test_quota_windows_are_aligned_to_utc(period, start, end, expected_usage):
    with running_reference_services(metering_config={"metric": (10, period)}) as services:
        services.metering.clock = lambda: NOW
        client = MeteringClient(services.metering_address, timeout=1.0)
        moments = [
            datetime(2025, 1, 15, 10, 5, tzinfo=UTC),  # this hour
            datetime(2025, 1, 15, 9, 59, tzinfo=UTC),  # earlier today
            datetime(2025, 1, 13, 0, 0, tzinfo=UTC),  # Monday of this ISO week
            datetime(2025, 1, 12, 23, 59, tzinfo=UTC),  # Sunday before: last week
            datetime(2024, 12, 31, 23, 59, tzinfo=UTC),  # last month
        ]
        for index, moment in enumerate(moments):
            client.ingest_event(event(f"tx-{index}", code="metric", timestamp=moment))

        status = client.get_quota_status(agent_id="agent-1", metric_code="metric")
        client.close()

    assert (status.period, status.period_start, status.period_end) == (period, start, end)
    assert status.current_usage == expected_usage


def test_usage_asked_about_keeps_counting_what_arrives_in_its_window():
    with running_reference_services(metering_config={"metric": (100, DAILY)}) as services:
        clock = {"now": NOW}
        services.metering.clock = lambda: clock["now"]
        client = MeteringClient(services.metering_address, timeout=1.0)
        today, yesterday = NOW - timedelta(hours=1), NOW - timedelta(days=1)
        client.ingest_event(event("tx-1", code="metric", quantity=2, timestamp=today))

        # a check (the window's total is now kept), then usage in and out of the window
        first = client.check_quota(agent_id="agent-1", metric_code="metric", quantity=1)
        client.ingest_event(event("tx-2", code="metric", quantity=3, timestamp=today))
        client.ingest_event(event("tx-3", code="metric", quantity=50, timestamp=yesterday))
        second = client.check_quota(agent_id="agent-1", metric_code="metric", quantity=1)
        # the next day starts from what arrived in it only
        clock["now"] = NOW + timedelta(days=1)
        client.ingest_event(
            event("tx-4", code="metric", quantity=7, timestamp=NOW + timedelta(days=1))
        )
        next_day = client.check_quota(agent_id="agent-1", metric_code="metric", quantity=1)
        client.close()

    assert (first.current_usage, second.current_usage, next_day.current_usage) == (2, 5, 7)


def test_stream_events_returns_matching_stored_events(metering_client):
    earlier = datetime(2025, 1, 1, tzinfo=UTC)
    later = datetime(2025, 1, 2, tzinfo=UTC)
    metering_client.ingest_batch(
        [
            event("tx-1", code="api_calls", timestamp=earlier),
            event(
                "tx-2",
                code="trade_executions",
                timestamp=later,
                properties={"symbol": "AAPL", "notional": "1500.25"},
                organization_id="org-1",
            ),
            event(
                "tx-3", code="oversight_requests", event_type="oversight_request", timestamp=later
            ),
        ]
    )

    everything = metering_client.stream_events()
    trades = metering_client.stream_events(metric_codes=["trade_executions"])
    oversight = metering_client.stream_events(event_types=["oversight_request"])
    recent = metering_client.stream_events(since=later)
    org = metering_client.stream_events(organization_id="org-1")

    assert [e.transaction_id for e in everything] == ["tx-1", "tx-2", "tx-3"]
    assert trades == [
        UsageEvent(
            transaction_id="tx-2",
            agent_id="agent-1",
            code="trade_executions",
            quantity=1,
            organization_id="org-1",
            timestamp=later,
            properties={"symbol": "AAPL", "notional": "1500.25"},
        )
    ]
    assert [e.transaction_id for e in oversight] == ["tx-3"]
    assert [e.transaction_id for e in recent] == ["tx-2", "tx-3"]
    assert [e.transaction_id for e in org] == ["tx-2"]


def test_unknown_event_type_is_a_caller_error(metering_client):
    with pytest.raises(ValueError, match="event_type"):
        metering_client.ingest_event(event("tx-1", event_type="trade"))
