"""A standalone metering service that restarts forgets the agents' quota hints: the first order
of each agent that finds another limit sends its hint again, and is not refused for it."""

from __future__ import annotations

import logging

import pytest

from grpc_clients import metering as metering_api
from grpc_clients.registry import get_metering_client, reset_clients
from observability.metrics import grpc_call_counts
from reference_services.server import start_reference_services
from tests.helpers import NO_APPROVAL, free_port, submit

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

# The restarted service's default trade quota, small so that a test reaches it in a few orders
# (the reference default, 100 a day, works the same way).
DEFAULT_TRADES = 3
METERING_DEFAULTS = {"api_calls": (10_000, "daily"), "trade_executions": (DEFAULT_TRADES, "daily")}


class StandaloneMetering:
    """A reference metering server on a fixed port, restarted as its container would be: a new
    process on the same address, its memory empty."""

    def __init__(self) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.services = self._start()

    def _start(self):
        return start_reference_services(
            metering_address=self.address,
            oversight_address=None,
            metering_config=METERING_DEFAULTS,
        )

    def restart(self) -> None:
        self.services.stop(grace=0)
        self.services = self._start()

    def stop(self) -> None:
        self.services.stop(grace=0)


@pytest.fixture
def metering(settings, reference_services):
    settings.EMBEDDED_SERVICES = False
    settings.METERING_QUOTA_HINTS = True
    service = StandaloneMetering()
    settings.METERING_GRPC_ADDRESS = service.address
    reset_clients()
    yield service
    service.stop()
    settings.METERING_GRPC_ADDRESS = reference_services.metering_address
    reset_clients()


@pytest.fixture
def make_agent(agent_factory, django_capture_on_commit_callbacks):
    def make(daily_trade_limit: int):
        # created as the API does: the hint is sent once the agent is committed
        with django_capture_on_commit_callbacks(execute=True):
            return agent_factory(
                budget="100000", config={**NO_APPROVAL, "daily_trade_limit": daily_trade_limit}
            )

    return make


def buy(client, agent) -> int:
    return submit(client, agent, symbol="AAPL", side="buy", quantity="1").status_code


def service_trade_limit(agent) -> int:
    status = get_metering_client().get_quota_status(
        agent_id=str(agent.pk), metric_code="trade_executions"
    )
    return status.limit


def test_an_agent_above_the_default_quota_keeps_trading_after_the_service_restarts(
    metering, make_agent, owner_client, prices, caplog
):
    # given: an agent allowed more trades a day than the service's default, the service told so
    agent = make_agent(daily_trade_limit=DEFAULT_TRADES + 2)
    assert service_trade_limit(agent) == DEFAULT_TRADES + 2

    # when: the standalone service restarts (the server does not), and the agent trades
    metering.restart()
    with caplog.at_level(logging.INFO, logger="trading_demo.metering"):
        codes = [buy(owner_client, agent) for _ in range(DEFAULT_TRADES + 2)]

    # then: every order up to its own limit is placed, the service knows the limit again,
    # and the log says the hint was sent again
    assert codes == [201] * (DEFAULT_TRADES + 2)
    assert buy(owner_client, agent) == 429
    assert service_trade_limit(agent) == DEFAULT_TRADES + 2
    resent = [r for r in caplog.records if "hint sent again" in r.getMessage()]
    assert len(resent) == 1 and resent[0].levelno == logging.WARNING
    assert str(agent.pk) in resent[0].getMessage()


def test_the_order_that_finds_the_lost_hint_is_not_refused(
    metering, make_agent, owner_client, prices
):
    # given: an agent above the default, and a restarted service that already counts the
    # default's worth of its trades today (usage delivered to it after the restart)
    agent = make_agent(daily_trade_limit=DEFAULT_TRADES * 3)
    metering.restart()
    delivered = [
        metering_api.UsageEvent(
            transaction_id=f"delivered-{n}",
            agent_id=str(agent.pk),
            code="trade_executions",
            quantity=1,
        )
        for n in range(DEFAULT_TRADES)
    ]
    assert get_metering_client().ingest_batch(delivered).accepted_count == DEFAULT_TRADES

    # when: its next order finds the service's default quota used up
    before = grpc_call_counts()
    code = buy(owner_client, agent)

    # then: the hint goes again and the quota is asked again: the order is placed
    assert code == 201
    after = grpc_call_counts()
    made = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert made == {
        "metering/CheckQuota": 2,
        "metering/IngestEventBatch": 1,
        "oversight/SubmitRequest": 1,
    }
    assert service_trade_limit(agent) == DEFAULT_TRADES * 3


@pytest.mark.parametrize("daily_trade_limit", [DEFAULT_TRADES, DEFAULT_TRADES - 1])
def test_an_agent_within_the_default_quota_is_answered_as_before(
    daily_trade_limit, metering, make_agent, owner_client, prices
):
    # given: an agent whose limit is the service's default or below it
    agent = make_agent(daily_trade_limit=daily_trade_limit)

    # when: the service restarts and the agent trades past its limit
    metering.restart()
    codes = [buy(owner_client, agent) for _ in range(daily_trade_limit + 1)]

    # then: its limit holds, as before the restart
    assert codes == [201] * daily_trade_limit + [429]


def test_an_agent_at_the_default_quota_costs_no_extra_call_after_a_restart(
    metering, make_agent, owner_client, prices
):
    # given: an agent whose limit is the service's default
    agent = make_agent(daily_trade_limit=DEFAULT_TRADES)
    metering.restart()

    # when: it places an order
    before = grpc_call_counts()
    assert buy(owner_client, agent) == 201

    # then: the order made its two usual gRPC calls, nothing more
    after = grpc_call_counts()
    made = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert made == {"metering/CheckQuota": 1, "oversight/SubmitRequest": 1}
