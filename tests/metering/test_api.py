"""The metering routes (SPEC §5), quota checks and the api_calls counter, through HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from api import problems
from metering.models import UsageEvent
from metering.services import quota_check, quota_configure, usage_deliver_pending, usage_record
from tests.helpers import (
    agent_url,
    buffered_events,
    generic_plan,
    sent_statements,
    usage_of_a_busy_day,
)

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/metering/events"


def usage_url(agent) -> str:
    return f"/api/v1/metering/agents/{agent.pk}/usage"


def quota_url(agent) -> str:
    return f"/api/v1/metering/agents/{agent.pk}/quota"


# --- POST /metering/events ---------------------------------------------------------------------


def test_posted_event_goes_to_the_outbox_and_a_repeat_is_a_duplicate(agent_factory, owner_client):
    # given
    agent = agent_factory()
    body = {
        "agent_id": str(agent.pk),
        "event_type": "llm_inference",
        "code": "llm_tokens",
        "quantity": 1500,
        "transaction_id": "client-tx-1",
        "properties": {"model": "small"},
    }

    # when
    first = owner_client.post(EVENTS, body, format="json")
    second = owner_client.post(EVENTS, {**body, "quantity": 9}, format="json")

    # then
    assert first.status_code == 202
    assert first.json() == {"transaction_id": "client-tx-1", "status": "accepted"}
    assert second.status_code == 202
    assert second.json() == {"transaction_id": "client-tx-1", "status": "duplicate"}
    (event,) = UsageEvent.objects.filter(agent=agent, code="llm_tokens")
    assert (event.quantity, event.event_type, event.delivery_state) == (
        1500,
        "llm_inference",
        "pending",
    )
    assert event.properties == {"model": "small"}

    # and it is delivered like any usage
    usage_deliver_pending()
    event.refresh_from_db()
    assert event.delivery_state == "delivered"


def test_posted_event_without_transaction_id_gets_one(agent_factory, owner_client):
    agent = agent_factory()
    body = {"agent_id": str(agent.pk), "event_type": "api_call", "code": "custom", "quantity": 0}

    response = owner_client.post(EVENTS, body, format="json")

    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert UsageEvent.objects.filter(
        agent=agent, client_transaction_id=response.json()["transaction_id"]
    ).exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_type": "trade"}, "event_type"),
        ({"event_type": "API_CALL"}, "event_type"),
        ({"quantity": -1}, "quantity"),
        ({"code": ""}, "code"),
        ({"properties": {"quota_limit": "1000000"}}, "properties"),
        ({"agent_id": "not-a-uuid"}, "agent_id"),
    ],
)
def test_posted_event_is_validated(agent_factory, owner_client, change, field):
    agent = agent_factory()
    body = {"agent_id": str(agent.pk), "event_type": "api_call", "code": "custom", "quantity": 1}

    response = owner_client.post(EVENTS, {**body, **change}, format="json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"]
    assert not UsageEvent.objects.filter(agent=agent).exists()


def test_posting_for_another_owners_agent_is_not_found(agent_factory, other_owner, client_for):
    agent = agent_factory()
    body = {"agent_id": str(agent.pk), "event_type": "api_call", "code": "custom", "quantity": 1}

    response = client_for(other_owner).post(EVENTS, body, format="json")

    assert response.status_code == 404
    assert not UsageEvent.objects.filter(agent=agent).exists()


def test_anonymous_callers_are_refused(agent_factory, anon_client):
    agent = agent_factory()
    assert anon_client.get(usage_url(agent)).status_code == 401
    assert anon_client.get(quota_url(agent)).status_code == 401
    assert anon_client.post(EVENTS, {}, format="json").status_code == 401


# --- GET usage ---------------------------------------------------------------------------------


def test_usage_report_sums_the_ledger_of_the_period(agent_factory, owner_client):
    # given
    agent = agent_factory()
    for _ in range(3):
        usage_record(agent=agent, code="api_calls", quantity=1)
    usage_record(agent=agent, code="trade_executions", quantity=1, symbol="AAPL")
    usage_record(agent=agent, code="trade_volume", quantity=1500, symbol="AAPL")
    usage_record(agent=agent, code="trade_executions", quantity=1, symbol="TSLA")
    usage_record(agent=agent, code="trade_volume", quantity=700, symbol="TSLA")
    usage_record(agent=agent, code="oversight_requests", quantity=1, event_type="oversight_request")
    usage_record(  # last month: outside today, this week and this month
        agent=agent, code="api_calls", quantity=50, occurred_at=timezone.now() - timedelta(days=40)
    )
    usage_deliver_pending()
    usage_record(agent=agent, code="api_calls", quantity=1)  # still in the outbox: counts

    # when
    response = owner_client.get(usage_url(agent), {"period": "daily"})

    # then
    assert response.status_code == 200
    body = response.json()
    assert body["agent_id"] == str(agent.pk)
    assert body["period"] == "daily"
    assert (
        body["api_calls"],
        body["trades"],
        body["trade_volume"],
        body["oversight_requests"],
    ) == (
        4,
        2,
        2200,
        1,
    )
    assert body["breakdown"]["by_event_type"] == {"api_call": 8, "oversight_request": 1}
    # by metric code, the same figures as the totals: no guessing why api_call says 8
    assert body["breakdown"]["by_metric_code"] == {
        "api_calls": 4,
        "oversight_requests": 1,
        "trade_executions": 2,
        "trade_volume": 2200,
    }
    assert body["breakdown"]["by_symbol"] == {
        "AAPL": {"trades": 1, "trade_volume": 1500},
        "TSLA": {"trades": 1, "trade_volume": 700},
    }
    start = body["period_start"]
    assert start.endswith(("T00:00:00Z", "T00:00:00+00:00"))
    assert owner_client.get(usage_url(agent)).json()["period"] == "daily"
    # the two usage requests above were themselves API calls made for this agent
    assert owner_client.get(usage_url(agent), {"period": "monthly"}).json()["api_calls"] == 4 + 2


def test_usage_report_checks_the_period_and_the_owner(agent_factory, owner_client, client_for):
    agent = agent_factory()
    from django.contrib.auth.models import User

    stranger = User.objects.create_user(username="stranger")

    assert owner_client.get(usage_url(agent), {"period": "yearly"}).status_code == 400
    assert client_for(stranger).get(usage_url(agent)).status_code == 404
    assert client_for(stranger).get(quota_url(agent)).status_code == 404


def test_operators_see_any_agents_usage(agent_factory, operator, client_for):
    agent = agent_factory()
    assert client_for(operator).get(usage_url(agent)).status_code == 200


# --- GET quota and quota_check -----------------------------------------------------------------


def test_quota_route_reports_the_metering_services_figures_plus_the_outbox(
    agent_factory, owner_client
):
    # given: daily_trade_limit 5, 2 trades delivered, 1 still in the outbox
    agent = agent_factory(config={"daily_trade_limit": 5})
    quota_configure(agent=agent)
    for _ in range(2):
        usage_record(agent=agent, code="trade_executions", quantity=1)
    usage_deliver_pending()
    usage_record(agent=agent, code="trade_executions", quantity=1)

    # when
    response = owner_client.get(quota_url(agent))

    # then
    assert response.status_code == 200
    body = response.json()
    assert body["agent_id"] == str(agent.pk)
    quotas = {q["metric_code"]: q for q in body["quotas"]}
    trades = quotas["trade_executions"]
    assert (trades["limit"], trades["used"], trades["remaining"], trades["period"]) == (
        5,
        3,
        2,
        "daily",
    )
    assert trades["usage_percentage"] == 60.0
    assert trades["period_start"] and trades["period_end"]
    api_calls = quotas["api_calls"]
    assert (api_calls["limit"], api_calls["period"]) == (10000, "daily")


def test_quota_route_answers_503_when_metering_is_down(
    agent_factory, owner_client, fresh_reference_services
):
    agent = agent_factory()
    fresh_reference_services.stop(grace=0)

    response = owner_client.get(quota_url(agent))

    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert "service-unavailable" in response.json()["type"]
    assert "Retry-After" in response


def test_quota_check_counts_usage_still_in_the_outbox(agent_factory):
    # given: limit 5, 4 executions recorded but not delivered
    agent = agent_factory(config={"daily_trade_limit": 5})
    quota_configure(agent=agent)
    for _ in range(4):
        usage_record(agent=agent, code="trade_executions", quantity=1)

    # when / then: one more fits
    decision = quota_check(agent=agent, metric_code="trade_executions")
    assert (decision.allowed, decision.current_usage, decision.remaining) == (True, 4, 1)

    # when the fifth is used, the sixth does not fit
    usage_record(agent=agent, code="trade_executions", quantity=1)
    with pytest.raises(problems.QuotaExceeded) as denied:
        quota_check(agent=agent, metric_code="trade_executions")
    problem = denied.value
    assert problem.extensions["limit"] == 5
    assert str(problem.detail).startswith("The trade_executions quota of 5 per day is used up")
    assert problem.extensions["remaining"] == 0
    now = timezone.now()
    seconds_to_midnight = (
        now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now
    ).total_seconds()
    assert 0 < problem.retry_after <= seconds_to_midnight + 2


def test_quota_warning_is_published_once_when_usage_crosses_80_percent(agent_factory):
    # given: limit 10, 7 used
    agent = agent_factory(config={"daily_trade_limit": 10})
    quota_configure(agent=agent)
    for _ in range(7):
        usage_record(agent=agent, code="trade_executions", quantity=1)
    usage_deliver_pending()

    # when: the 8th execution crosses 80 %
    quota_check(agent=agent, metric_code="trade_executions")

    # then
    (warning,) = buffered_events(agent, event="quota.warning")
    assert warning.channel == "portfolio"
    assert warning.data == {
        "metric_code": "trade_executions",
        "used": 8,
        "limit": 10,
        "usage_percentage": 80.0,
    }

    # when: the next use is already past 80 %
    usage_record(agent=agent, code="trade_executions", quantity=1)
    quota_check(agent=agent, metric_code="trade_executions")

    # then: no second warning
    assert len(buffered_events(agent, event="quota.warning")) == 1


def test_quota_check_fails_closed_when_metering_is_down(agent_factory, fresh_reference_services):
    from grpc_clients.errors import ServiceUnavailable

    agent = agent_factory()
    fresh_reference_services.stop(grace=0)
    with pytest.raises(ServiceUnavailable):
        quota_check(agent=agent, metric_code="trade_executions")


def test_quota_configure_queues_the_limit_when_metering_is_down(
    agent_factory, fresh_reference_services, metering_client
):
    # given: the metering service fails while the agent is configured
    agent = agent_factory(config={"daily_trade_limit": 3})
    fresh_reference_services.metering.fail_with = __import__("grpc").StatusCode.UNAVAILABLE

    # when
    quota_configure(agent=agent)

    # then: the configuration waits in the outbox and is applied on delivery
    (queued,) = UsageEvent.objects.filter(agent=agent, quantity=0)
    assert queued.properties == {"quota_limit": "3", "quota_period": "daily"}
    fresh_reference_services.metering.fail_with = None
    usage_deliver_pending(ignore_backoff=True)
    from grpc_clients.registry import get_metering_client

    status = get_metering_client().get_quota_status(
        agent_id=str(agent.pk), metric_code="trade_executions"
    )
    assert status.limit == 3


# --- api_calls ---------------------------------------------------------------------------------


def test_every_authenticated_request_for_an_agent_counts_one_api_call(
    agent_factory, owner_client, api_call_metering
):
    # given
    agent = agent_factory()

    # when
    assert owner_client.get(agent_url(agent)).status_code == 200
    assert owner_client.get(agent_url(agent, "/portfolio")).status_code == 200
    assert owner_client.get(usage_url(agent)).status_code == 200

    # then
    calls = UsageEvent.objects.filter(agent=agent, code="api_calls")
    assert calls.count() == 3
    assert {c.event_type for c in calls} == {"api_call"}
    assert {c.properties["method"] for c in calls} == {"GET"}
    assert owner_client.get(usage_url(agent)).json()["api_calls"] == 3


def test_requests_not_for_a_visible_agent_count_nothing(
    agent_factory, other_owner, client_for, anon_client, owner_client, api_call_metering
):
    # given
    agent = agent_factory()

    # when
    assert client_for(other_owner).get(agent_url(agent)).status_code == 404
    assert anon_client.get(agent_url(agent)).status_code == 401
    assert owner_client.get("/api/v1/agents").status_code == 200
    missing = "00000000-0000-4000-8000-000000000000"
    assert owner_client.get(f"/api/v1/agents/{missing}").status_code == 404

    # then
    assert not UsageEvent.objects.filter(code="api_calls").exists()


def test_api_calls_crossing_80_percent_on_delivery_publish_one_warning(agent_factory):
    # given: an api_calls quota of 10 per day, 7 calls delivered
    agent = agent_factory()
    usage_record(
        agent=agent,
        code="api_calls",
        quantity=0,
        properties={"quota_limit": "10", "quota_period": "daily"},
    )
    for _ in range(7):
        usage_record(agent=agent, code="api_calls", quantity=1)
    usage_deliver_pending()
    assert not buffered_events(agent, event="quota.warning")

    # when: two more calls are delivered (9 of 10), then one more
    for _ in range(2):
        usage_record(agent=agent, code="api_calls", quantity=1)
    usage_deliver_pending()
    usage_record(agent=agent, code="api_calls", quantity=1)
    usage_deliver_pending()

    # then
    (warning,) = buffered_events(agent, event="quota.warning")
    assert warning.data == {
        "metric_code": "api_calls",
        "used": 9,
        "limit": 10,
        "usage_percentage": 90.0,
    }


def test_delivery_asks_the_api_calls_quota_status_only_near_the_warning(agent_factory):
    from observability.metrics import grpc_call_counts

    # given: an api_calls quota of 100 per day, known to the deliverer after a first delivery
    agent = agent_factory()
    usage_record(
        agent=agent,
        code="api_calls",
        quantity=0,
        properties={"quota_limit": "100", "quota_period": "daily"},
    )
    usage_record(agent=agent, code="api_calls", quantity=1)
    usage_deliver_pending()
    asked = grpc_call_counts().get("metering/GetQuotaStatus", 0)

    # when: 70 more calls are delivered one batch at a time (71 of 100, below 80 %)
    for _ in range(70):
        usage_record(agent=agent, code="api_calls", quantity=1)
        usage_deliver_pending()

    # then: the status was not asked again, and no warning was published
    assert grpc_call_counts().get("metering/GetQuotaStatus", 0) == asked
    assert not buffered_events(agent, event="quota.warning")

    # when: calls go on past 80 %
    for _ in range(10):
        usage_record(agent=agent, code="api_calls", quantity=1)
        usage_deliver_pending()

    # then: the deliverer asked as usage neared the threshold and warned exactly once, at 80
    (warning,) = buffered_events(agent, event="quota.warning")
    assert warning.data["used"] == 80
    assert 1 <= grpc_call_counts().get("metering/GetQuotaStatus", 0) - asked <= 10


def test_pending_usage_sums_only_the_agents_undelivered_usage_of_the_metric_since_a_time(
    agent_factory,
):
    from django.db.models import Sum

    from metering.services import pending_usage

    # given: usage of two agents, two metrics, delivered or not, before and after a moment
    agent, other = agent_factory(), agent_factory()
    moment = timezone.now() - timedelta(hours=1)
    for who, code, quantity, when in [
        (agent, "trade_executions", 1, moment + timedelta(minutes=5)),
        (agent, "trade_executions", 2, moment + timedelta(minutes=6)),
        (agent, "trade_executions", 4, moment - timedelta(minutes=5)),  # before the moment
        (agent, "api_calls", 8, moment + timedelta(minutes=5)),  # another metric
        (other, "trade_executions", 16, moment + timedelta(minutes=5)),  # another agent
    ]:
        usage_record(agent=who, code=code, quantity=quantity, occurred_at=when)
    delivered = usage_record(agent=agent, code="trade_executions", quantity=32)
    UsageEvent.objects.filter(pk=delivered.pk).update(delivery_state="delivered")

    # then
    assert pending_usage(agent_id=agent.pk, metric_code="trade_executions", since=moment) == 3
    assert pending_usage(agent_id=agent.pk, metric_code="trade_executions", since=None) == 7
    assert pending_usage(agent_id=agent.pk, metric_code="api_calls", since=moment) == 8
    assert pending_usage(agent_id=other.pk, metric_code="api_calls", since=None) == 0
    orm = UsageEvent.objects.filter(
        agent=agent, code="trade_executions", delivery_state="pending", occurred_at__gte=moment
    ).aggregate(total=Sum("quantity"))["total"]
    assert orm == 3


@pytest.mark.postgres
def test_pending_usage_reads_the_partial_index_when_prepared_once_for_any_agent(agent_factory):
    from metering.services import pending_usage

    # given: an agent's busy day of delivered usage, and the statement pending_usage sends
    agent = agent_factory()
    usage_of_a_busy_day(agent)
    usage_record(agent=agent, code="trade_executions", quantity=1)
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    (sent, *_) = sent_statements(
        lambda: pending_usage(agent_id=agent.pk, metric_code="trade_executions", since=start)
    )

    # when: PostgreSQL plans it once for any parameter values, as it may after a few runs
    plan = generic_plan(*sent)

    # then: the plan still reads only the rows in the outbox
    assert "usage_pending_by_agent" in plan, plan
