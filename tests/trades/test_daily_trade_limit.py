"""``daily_trade_limit`` is the server's own pre-trade control (SPEC §5, order rule 3).

Counted from the server's database in the order's transaction, it holds whatever the metering
service knows: one that never heard of the limit (a standard Creto service, or the reference
service after a restart), or with the server's ``quota_limit`` hint switched off.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings

from agents.models import Agent
from grpc_clients.registry import get_metering_client, reset_clients
from reference_services.server import start_reference_services
from tests.helpers import race, submit
from trades.models import Trade

NO_APPROVAL = {
    "auto_approval_limit": "1000000",
    "approval_budget_fraction": "1",
    "max_position_fraction": "1",
}


@contextlib.contextmanager
def metering_that_never_heard_of_the_limit():
    """Fresh reference services from here on: what the server sees after the metering service
    restarted (its state is in memory), or from a service that ignores ``quota_limit``."""
    previous = (django_settings.METERING_GRPC_ADDRESS, django_settings.OVERSIGHT_GRPC_ADDRESS)
    services = start_reference_services()
    django_settings.METERING_GRPC_ADDRESS = services.metering_address
    django_settings.OVERSIGHT_GRPC_ADDRESS = services.oversight_address
    reset_clients()
    try:
        yield services
    finally:
        services.stop(grace=0)
        django_settings.METERING_GRPC_ADDRESS, django_settings.OVERSIGHT_GRPC_ADDRESS = previous
        reset_clients()


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return (midnight - now).total_seconds()


def buy(client, agent):
    return submit(client, agent, symbol="AAPL", side="buy", quantity="1")


def as_if_placed_yesterday(agent) -> None:
    """The agent's orders so far as the next UTC day finds them: created the day before, and
    counted in that day's count on the agent row."""
    yesterday = datetime.now(UTC) - timedelta(days=1)
    Trade.objects.filter(agent=agent).update(created_at=yesterday)
    Agent.objects.filter(pk=agent.pk).update(trades_day=yesterday.date())


def test_the_daily_trade_limit_holds_after_the_metering_service_restarts(
    owner_client, agent_factory, prices, django_capture_on_commit_callbacks
):
    # given: an agent allowed 2 orders a day, its limit hinted to the metering service
    with django_capture_on_commit_callbacks(execute=True):
        agent = agent_factory(config={**NO_APPROVAL, "daily_trade_limit": 2})
    assert buy(owner_client, agent).status_code == 201

    # when: the metering service restarts (forgetting the hint) and the agent keeps ordering
    with metering_that_never_heard_of_the_limit():
        second = buy(owner_client, agent)
        third = buy(owner_client, agent)

    # then: the third order of the day is refused by the server itself, until midnight UTC
    assert second.status_code == 201
    assert third.status_code == 429
    assert third["Content-Type"] == "application/problem+json"
    body = third.json()
    assert body["type"].endswith("/quota-exceeded/")
    assert body["limit"] == 2
    assert body["remaining"] == 0
    assert abs(int(third["Retry-After"]) - seconds_to_utc_midnight()) <= 5
    assert Trade.objects.filter(agent=agent).count() == 2


def test_the_daily_trade_limit_holds_without_the_metering_hint(
    owner_client, agent_factory, prices, settings, django_capture_on_commit_callbacks
):
    # given: the quota_limit hint switched off
    settings.METERING_QUOTA_HINTS = False
    with django_capture_on_commit_callbacks(execute=True):
        agent = agent_factory(config={**NO_APPROVAL, "daily_trade_limit": 3})

    # when: the agent places four orders
    codes = [buy(owner_client, agent).status_code for _ in range(4)]

    # then: the metering service was told nothing (its own default quota), yet the fourth is
    # refused
    status = get_metering_client().get_quota_status(
        agent_id=str(agent.pk), metric_code="trade_executions"
    )
    assert status.limit != 3
    assert codes == [201, 201, 201, 429]


def test_the_count_starts_again_at_midnight_utc(owner_client, agent_factory, prices):
    # given: an agent allowed 1 order a day, which it placed yesterday (UTC)
    agent = agent_factory(config={**NO_APPROVAL, "daily_trade_limit": 1})
    assert buy(owner_client, agent).status_code == 201
    as_if_placed_yesterday(agent)
    quota_url = f"/api/v1/metering/agents/{agent.pk}/quota"

    # when / then: today the quota route shows none placed, and one order, only one, passes
    assert owner_client.get(quota_url).json()["daily_trades"]["orders_today"] == 0
    assert buy(owner_client, agent).status_code == 201
    assert buy(owner_client, agent).status_code == 429
    assert owner_client.get(quota_url).json()["daily_trades"]["orders_today"] == 1


@pytest.mark.parametrize(
    ("order", "config", "accepted"),
    [
        ({"type": "market"}, NO_APPROVAL, (201, "filled")),
        ({"type": "limit", "limit_price": "90"}, NO_APPROVAL, (201, "open")),
        (
            {"type": "limit", "limit_price": "90", "time_in_force": "ioc"},
            NO_APPROVAL,
            (201, "cancelled"),
        ),
        (
            {"type": "market"},
            {**NO_APPROVAL, "auto_approval_limit": "50"},
            (202, "pending_approval"),
        ),
    ],
    ids=["filled", "resting", "ioc-cancelled", "pending-approval"],
)
def test_every_accepted_order_counts_and_a_refused_one_does_not(
    owner_client, agent_factory, prices, order, config, accepted
):
    # given: an agent allowed 2 orders a day
    agent = agent_factory(config={**config, "daily_trade_limit": 2})

    # when: it places an order accepted as ``accepted``, one refused for want of cash, then
    # two more market orders
    first = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1", **order)
    broke = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="100000")
    second = submit(owner_client, agent, symbol="TSLA", side="buy", quantity="1")
    third = submit(owner_client, agent, symbol="TSLA", side="buy", quantity="1")

    # then: the first and the second are the day's two orders, the third is refused
    assert (first.status_code, first.json()["status"]) == accepted
    assert broke.status_code == 402
    assert second.status_code in (201, 202)
    assert third.status_code == 429
    daily = owner_client.get(f"/api/v1/metering/agents/{agent.pk}/quota").json()["daily_trades"]
    assert (daily["orders_today"], daily["remaining"]) == (2, 0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_orders_never_exceed_the_daily_trade_limit(
    client_for, owner, agent_factory, prices
):
    # given: an agent allowed 5 orders a day, and a metering service that does not know it
    agent = agent_factory(config={**NO_APPROVAL, "daily_trade_limit": 5})
    with metering_that_never_heard_of_the_limit():
        # when: 20 orders arrive at once
        responses = race(20, lambda _: buy(client_for(owner), agent))

    # then: exactly 5 are accepted, 15 refused with 429
    codes = sorted(response.status_code for response in responses)
    assert codes == [201] * 5 + [429] * 15
    assert Trade.objects.filter(agent=agent).count() == 5


def test_the_quota_route_shows_the_servers_daily_trade_limit_as_the_order_path_counts_it(
    owner_client, agent_factory, prices, settings
):
    # given: an agent allowed 3 orders a day, the metering service never told (no hint), one
    # order placed yesterday and two today
    settings.METERING_QUOTA_HINTS = False
    agent = agent_factory(config={**NO_APPROVAL, "daily_trade_limit": 3})
    assert buy(owner_client, agent).status_code == 201
    as_if_placed_yesterday(agent)
    for _ in range(2):
        assert buy(owner_client, agent).status_code == 201
    quota_url = f"/api/v1/metering/agents/{agent.pk}/quota"

    # when: the owner reads the agent's quotas
    before = owner_client.get(quota_url)

    # then: beside the metering service's quotas (kept as they were), the server's own control:
    # two orders today of three, resetting at the next midnight UTC
    assert before.status_code == 200, before.content
    body = before.json()
    assert {quota["metric_code"] for quota in body["quotas"]} == {"api_calls", "trade_executions"}
    daily = body["daily_trades"]
    assert (daily["orders_today"], daily["daily_trade_limit"], daily["remaining"]) == (2, 3, 1)
    resets_at = datetime.fromisoformat(daily["resets_at"])
    assert resets_at == datetime.fromisoformat(daily["window_start"]) + timedelta(days=1)
    assert (resets_at.hour, resets_at.minute, resets_at.utcoffset()) == (0, 0, timedelta(0))
    assert 0 < (resets_at - datetime.now(UTC)).total_seconds() <= 86400

    # and when the one order left is placed, the route and the order path agree: none left,
    # and the next order is refused until the moment the route said
    assert buy(owner_client, agent).status_code == 201
    after = owner_client.get(quota_url).json()["daily_trades"]
    refused = buy(owner_client, agent)
    assert (after["orders_today"], after["remaining"]) == (3, 0)
    assert refused.status_code == 429
    assert refused.json()["limit"] == after["daily_trade_limit"]
    seconds_left = (datetime.fromisoformat(after["resets_at"]) - datetime.now(UTC)).total_seconds()
    assert abs(int(refused["Retry-After"]) - seconds_left) <= 5
