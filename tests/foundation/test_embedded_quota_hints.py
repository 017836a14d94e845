"""A restarted server's embedded metering service knows every agent's daily trade limit again."""

from __future__ import annotations

import pytest

from agents.choices import AgentStatus
from agents.services import agent_update
from grpc_clients.registry import reset_clients
from runtime.embedded import start_embedded_services
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


def trade_quota_limit(client, agent) -> int:
    response = client.get(f"/api/v1/metering/agents/{agent.pk}/quota")
    assert response.status_code == 200, response.content
    quotas = {q["metric_code"]: q for q in response.json()["quotas"]}
    return quotas["trade_executions"]["limit"]


def test_the_embedded_metering_service_gets_the_daily_trade_limits_again_after_a_restart(
    settings, reference_services, agent_factory, owner_client, django_capture_on_commit_callbacks
):
    # given: serve's embedded metering service, told the limits as agents are created (seed)
    settings.EMBEDDED_SERVICES = True
    settings.METERING_QUOTA_HINTS = True
    settings.METERING_GRPC_ADDRESS = f"127.0.0.1:{free_port()}"
    settings.OVERSIGHT_GRPC_ADDRESS = reference_services.oversight_address
    reset_clients()
    services = start_embedded_services()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            trading = agent_factory(name="Trading", config={"daily_trade_limit": 5000})
            paused = agent_factory(name="Paused", config={"daily_trade_limit": 300})
            agent_update(agent=paused, actor=None, status=AgentStatus.PAUSED)
        assert trade_quota_limit(owner_client, trading) == 5000

        # when: the server restarts; the database stays seeded, the service starts empty
        services.stop(grace=0)
        services = start_embedded_services()

        # then: the quota is each agent's limit, not the service's default of 100
        assert services is not None and services.metering_address
        assert trade_quota_limit(owner_client, trading) == 5000
        assert trade_quota_limit(owner_client, paused) == 300
    finally:
        if services is not None:
            services.stop(grace=0)
        settings.METERING_GRPC_ADDRESS = reference_services.metering_address
        reset_clients()


def test_without_quota_hints_the_restarted_service_applies_its_own_default(
    settings, reference_services, agent_factory, owner_client
):
    # given
    settings.EMBEDDED_SERVICES = True
    settings.METERING_QUOTA_HINTS = False
    settings.METERING_GRPC_ADDRESS = f"127.0.0.1:{free_port()}"
    settings.OVERSIGHT_GRPC_ADDRESS = reference_services.oversight_address
    reset_clients()
    agent = agent_factory(config={"daily_trade_limit": 5000})

    # when
    services = start_embedded_services()
    try:
        # then: nothing was sent; the reference service's default trade quota applies
        assert trade_quota_limit(owner_client, agent) == 100
    finally:
        services.stop(grace=0)
        settings.METERING_GRPC_ADDRESS = reference_services.metering_address
        reset_clients()
