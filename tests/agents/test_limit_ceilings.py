"""Owners may tighten their agents' governance limits, never loosen them beyond the ceilings.

The ceilings (settings.AGENT_LIMIT_CEILINGS, also the defaults) are the operator's: above them
only an operator may set a limit; every change of a limit is audited and shown in the admin.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from agents.models import Agent, AgentLimitChange
from tests.helpers import AGENTS, agent_url, submit
from trades import market

LOOSER_THAN_CEILING = [
    ("auto_approval_limit", "1000000000"),
    ("approval_budget_fraction", "1"),
    ("max_position_fraction", "1"),
    ("daily_trade_limit", 1_000_000),
]


@pytest.fixture
def msft_at_400(db):
    # 30 MSFT at 400 = 12,000: above the default auto-approval limit of 10,000.
    market.set_price("MSFT", "400.00")


def buy_30_msft(client, agent):
    return submit(client, agent, symbol="MSFT", side="buy", quantity="30")


@pytest.mark.parametrize(("key", "value"), LOOSER_THAN_CEILING)
def test_an_owner_cannot_loosen_a_limit_beyond_its_ceiling_by_patch(
    owner_client, agent_factory, msft_at_400, key, value
):
    # given: an agent at the default (ceiling) limits
    agent = agent_factory()
    config_before = Agent.objects.get(pk=agent.pk).config

    # when: its owner raises one limit above the operator-set ceiling
    response = owner_client.patch(agent_url(agent), {"config": {key: value}}, format="json")

    # then: 403 forbidden, saying it is an operator's action; nothing changed
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/forbidden/")
    assert "operator's action" in body["detail"]
    assert key in body["detail"]
    assert key in body["ceilings"]
    assert Agent.objects.get(pk=agent.pk).config == config_before
    assert not AgentLimitChange.objects.filter(agent=agent).exists()


def test_a_large_order_still_waits_for_a_human_after_the_owner_tried_to_switch_approval_off(
    owner_client, agent_factory, msft_at_400
):
    # given: an agent of 100,000 with the default limits
    agent = agent_factory()

    # when: the owner tries to lift the auto-approval limit, then orders 30 MSFT (12,000)
    patched = owner_client.patch(
        agent_url(agent), {"config": {"auto_approval_limit": "1000000000"}}, format="json"
    )
    order = buy_30_msft(owner_client, agent)

    # then: the order waits for approval
    assert patched.status_code == 403
    assert order.status_code == 202
    assert order.json()["status"] == "pending_approval"


@pytest.mark.parametrize(("key", "value"), LOOSER_THAN_CEILING)
def test_an_owner_cannot_create_an_agent_with_a_limit_beyond_its_ceiling(owner_client, key, value):
    response = owner_client.post(
        AGENTS, {"name": "Loose", "budget": "100000", "config": {key: value}}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["type"].endswith("/forbidden/")
    assert "operator's action" in response.json()["detail"]
    assert not Agent.objects.exists()


def test_an_owner_may_tighten_limits_on_create_and_on_patch(owner_client):
    # given/when: an agent created stricter than the ceilings, then tightened further
    created = owner_client.post(
        AGENTS,
        {
            "name": "Careful",
            "budget": "100000",
            "config": {
                "auto_approval_limit": "5000",
                "approval_budget_fraction": "0.1",
                "max_position_fraction": "0.2",
                "daily_trade_limit": 20,
            },
        },
        format="json",
    )
    agent_id = created.json()["id"]
    patched = owner_client.patch(
        f"{AGENTS}/{agent_id}",
        {"config": {"auto_approval_limit": "1000", "daily_trade_limit": 5}},
        format="json",
    )
    # and back up to the ceiling itself, which is allowed
    at_ceiling = owner_client.patch(
        f"{AGENTS}/{agent_id}", {"config": {"auto_approval_limit": "10000"}}, format="json"
    )

    # then
    assert created.status_code == 201
    assert patched.status_code == 200
    assert patched.json()["config"]["auto_approval_limit"] == "1000.00"
    assert patched.json()["config"]["daily_trade_limit"] == 5
    assert at_ceiling.status_code == 200
    assert at_ceiling.json()["config"]["auto_approval_limit"] == "10000.00"


def test_an_operator_may_loosen_a_limit_beyond_its_ceiling_and_the_owner_may_tighten_it_again(
    owner_client, operator, client_for, agent_factory, msft_at_400
):
    agent = agent_factory()

    loosened = client_for(operator).patch(
        agent_url(agent), {"config": {"auto_approval_limit": "50000"}}, format="json"
    )
    order = buy_30_msft(owner_client, agent)
    # the owner lowers it, still above the ceiling: tightening is always allowed
    tightened = owner_client.patch(
        agent_url(agent), {"config": {"auto_approval_limit": "40000"}}, format="json"
    )
    # but cannot raise it back
    raised = owner_client.patch(
        agent_url(agent), {"config": {"auto_approval_limit": "45000"}}, format="json"
    )

    assert loosened.status_code == 200
    assert loosened.json()["config"]["auto_approval_limit"] == "50000.00"
    assert order.status_code == 201
    assert order.json()["status"] == "filled"
    assert tightened.status_code == 200
    assert raised.status_code == 403


def test_the_ceilings_are_settings_and_are_the_defaults(owner_client, settings):
    settings.AGENT_LIMIT_CEILINGS = {
        "auto_approval_limit": Decimal("2000"),
        "approval_budget_fraction": Decimal("0.1"),
        "max_position_fraction": Decimal("0.2"),
        "daily_trade_limit": 10,
    }

    created = owner_client.post(AGENTS, {"name": "A", "budget": "100000"}, format="json")
    above = owner_client.patch(
        f"{AGENTS}/{created.json()['id']}",
        {"config": {"daily_trade_limit": 11}},
        format="json",
    )

    assert created.status_code == 201
    config = created.json()["config"]
    assert config["auto_approval_limit"] == "2000.00"
    assert config["approval_budget_fraction"] == "0.1"
    assert config["max_position_fraction"] == "0.2"
    assert config["daily_trade_limit"] == 10
    assert above.status_code == 403


def test_every_limit_change_is_audited_with_who_when_before_and_after_and_shown_in_the_admin(
    owner, owner_client, operator, client_for, agent_factory, user_factory
):
    # given: an agent created by its owner with a tighter daily limit
    created = owner_client.post(
        AGENTS,
        {"name": "Audited", "budget": "100000", "config": {"daily_trade_limit": 50}},
        format="json",
    )
    agent = Agent.objects.get(pk=created.json()["id"])

    # when: the owner tightens, the operator loosens beyond the ceiling, a refused attempt
    owner_client.patch(agent_url(agent), {"config": {"auto_approval_limit": "3000"}}, format="json")
    client_for(operator).patch(
        agent_url(agent), {"config": {"daily_trade_limit": 500}}, format="json"
    )
    refused = owner_client.patch(
        agent_url(agent), {"config": {"max_position_fraction": "0.9"}}, format="json"
    )

    # then: one row per change, oldest first here: who, when, before, after
    assert refused.status_code == 403
    rows = list(AgentLimitChange.objects.filter(agent=agent).order_by("changed_at", "id"))
    assert [(r.setting, r.before, r.after, r.actor_username, r.by_operator) for r in rows] == [
        ("daily_trade_limit", None, 50, owner.username, False),
        ("auto_approval_limit", "10000.00", "3000.00", owner.username, False),
        ("daily_trade_limit", 50, 500, operator.username, True),
    ]
    assert all(r.changed_at is not None for r in rows)

    # and: staff see them, read-only, on the agent's page and in their own list
    staff = user_factory(username="staff-operator", staff=True, operator=True)
    admin = Client()
    admin.force_login(staff)
    page = admin.get(reverse("admin:agents_agent_change", args=[agent.pk]))
    listing = admin.get(reverse("admin:agents_agentlimitchange_changelist"))
    add = admin.get(reverse("admin:agents_agentlimitchange_add"))
    assert page.status_code == 200
    assert "Limit changes (audit)" in page.content.decode()
    assert "3000.00" in page.content.decode()
    assert listing.status_code == 200
    assert operator.username in listing.content.decode()
    assert add.status_code == 403
