"""Agent routes through HTTP: create, list, read, PATCH, the DELETE kill switch, portfolio."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import Agent
from metering.models import UsageEvent
from oversight.models import ApprovalRequest
from tests.helpers import AGENTS, agent_url, buffered_events, submit
from trades import market
from trades.models import Trade
from trades.services import market_tick


def buy(client, agent, **body):
    return submit(client, agent, **{"symbol": "AAPL", "side": "buy", "quantity": "1", **body})


# --- create ----------------------------------------------------------------------------------


def test_create_an_agent_with_defaults(owner_client, owner):
    response = owner_client.post(AGENTS, {"name": "Alpha", "budget": "100000"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Alpha"
    assert body["owner"] == owner.username
    assert body["status"] == "active"
    assert body["strategy"] == "custom"
    assert body["risk_tolerance"] == 5
    assert body["budget"] == body["cash_balance"] == body["available_cash"] == "100000.00"
    assert body["reserved_cash"] == "0.00"
    assert body["config"] == {
        "auto_approval_limit": "10000.00",
        "approval_budget_fraction": "0.25",
        "daily_trade_limit": 100,
        "max_position_fraction": "0.3",
        "allowed_symbols": None,
    }
    assert Agent.objects.get(pk=body["id"]).owner == owner


def test_create_with_a_config(owner_client):
    response = owner_client.post(
        AGENTS,
        {
            "name": "Beta",
            "budget": "5000",
            "strategy": "momentum",
            "risk_tolerance": 8,
            "config": {"daily_trade_limit": 5, "allowed_symbols": ["aapl", "MSFT"]},
        },
        format="json",
    )

    assert response.status_code == 201
    config = response.json()["config"]
    assert config["daily_trade_limit"] == 5
    assert config["allowed_symbols"] == ["AAPL", "MSFT"]


def test_the_strategy_parameters_live_in_the_config(owner_client):
    # given: an agent created with the parameters of its strategy
    params = {"short_window": 3, "k": "1.5", "pair": ["AAPL", "MSFT"], "exit_at_mean": True}
    response = owner_client.post(
        AGENTS,
        {
            "name": "Gamma",
            "budget": "5000",
            "strategy": "momentum",
            "config": {"strategy_params": params},
        },
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["config"]["strategy_params"] == params

    # when: a PATCH changes another setting, then the parameters
    url = f"{AGENTS}/{response.json()['id']}"
    kept = owner_client.patch(url, {"config": {"daily_trade_limit": 5}}, format="json")
    changed = owner_client.patch(
        url, {"config": {"strategy_params": {"long_window": 30}}}, format="json"
    )

    # then: they are kept by the first and replaced by the second
    assert kept.json()["config"]["strategy_params"] == params
    assert changed.json()["config"]["strategy_params"] == {"long_window": 30}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "budget": "999.99"}, "budget"),
        ({"name": "x", "budget": "1000000.01"}, "budget"),
        ({"name": "x", "budget": "5000", "strategy": "yolo"}, "strategy"),
        ({"name": "x", "budget": "5000", "risk_tolerance": 11}, "risk_tolerance"),
        ({"budget": "5000"}, "name"),
        ({"name": "x", "budget": "5000", "config": {"bogus": 1}}, "config"),
        ({"name": "x", "budget": "5000", "config": {"max_position_fraction": "2"}}, "config"),
        ({"name": "x", "budget": "5000", "config": {"allowed_symbols": ["XYZ"]}}, "config"),
        ({"name": "x", "budget": "5000", "config": {"daily_trade_limit": 0}}, "config"),
        ({"name": "x", "budget": "5000", "config": {"strategy_params": [1]}}, "config"),
        (
            {"name": "x", "budget": "5000", "config": {"strategy_params": {"w": "x" * 101}}},
            "config",
        ),
        (
            {"name": "x", "budget": "5000", "config": {"strategy_params": {"pair": [1, 2]}}},
            "config",
        ),
    ],
)
def test_invalid_agents_are_400_with_field_errors(owner_client, body, field):
    response = owner_client.post(AGENTS, body, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Agent.objects.exists()


# --- read and list ---------------------------------------------------------------------------


def test_owners_list_their_own_agents_and_operators_all(
    owner_client, client_for, other_owner, operator, agent_factory
):
    mine = [agent_factory(name=f"mine-{i}") for i in range(3)]
    agent_factory(user=other_owner, name="theirs")

    listed = owner_client.get(AGENTS).json()
    assert listed["count"] == 3
    assert [row["id"] for row in listed["results"]] == [str(a.pk) for a in reversed(mine)]
    assert client_for(operator).get(AGENTS).json()["count"] == 4
    assert client_for(other_owner).get(AGENTS).json()["count"] == 1


def test_an_agent_reads_with_its_owner_for_the_owner_and_for_an_operator(
    owner, owner_client, client_for, operator, agent_factory, django_assert_max_num_queries
):
    agent = agent_factory(name="mine")

    # the owner's own agent: token + user, agent, its api_calls usage row; none for the owner
    with django_assert_max_num_queries(3):
        mine = owner_client.get(agent_url(agent)).json()
    theirs = client_for(operator).get(agent_url(agent)).json()

    assert mine["owner"] == theirs["owner"] == owner.username
    assert mine == theirs


def test_agent_list_filters_and_paginates(owner_client, agent_factory):
    agents = [agent_factory(name=f"a{i}") for i in range(5)]
    owner_client.patch(agent_url(agents[0]), {"status": "paused"}, format="json")

    paused = owner_client.get(AGENTS, {"status": "paused"}).json()
    assert [row["id"] for row in paused["results"]] == [str(agents[0].pk)]
    page = owner_client.get(AGENTS, {"page_size": 2, "page": 3}).json()
    assert page["count"] == 5
    assert len(page["results"]) == 1
    assert owner_client.get(AGENTS, {"status": "sleeping"}).status_code == 400


def test_agent_list_query_count_is_pinned(
    client_for, operator, agent_factory, user_factory, django_assert_max_num_queries
):
    for index in range(10):
        agent_factory(user=user_factory(), name=f"agent-{index}")

    client = client_for(operator)

    # token + user, operator group, count, page with owners joined
    with django_assert_max_num_queries(4):
        response = client.get(AGENTS)
    assert response.json()["count"] == 10


def test_another_owners_agent_is_404_on_every_route(client_for, other_owner, agent_factory, prices):
    agent = agent_factory()
    trade = Trade.objects.get(pk=buy(client_for(agent.owner), agent).json()["id"])
    stranger = client_for(other_owner)

    calls = [
        stranger.get(agent_url(agent)),
        stranger.patch(agent_url(agent), {"name": "mine now"}, format="json"),
        stranger.delete(agent_url(agent)),
        stranger.get(agent_url(agent, "/portfolio")),
        stranger.get(agent_url(agent, "/portfolio/history")),
        stranger.get(agent_url(agent, "/trades")),
        buy(stranger, agent),
        stranger.get(agent_url(agent, f"/trades/{trade.pk}")),
        stranger.delete(agent_url(agent, f"/trades/{trade.pk}")),
    ]

    assert [response.status_code for response in calls] == [404] * len(calls)
    assert all(r["Content-Type"].startswith("application/problem+json") for r in calls)
    agent.refresh_from_db()
    assert agent.name == "Test agent"
    assert agent.status == "active"
    assert Trade.objects.filter(agent=agent).count() == 1


def test_unknown_agent_is_404(owner_client, db):
    response = owner_client.get(f"{AGENTS}/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404


def test_anonymous_is_401(anon_client, db):
    assert anon_client.get(AGENTS).status_code == 401
    created = anon_client.post(AGENTS, {"name": "x", "budget": "5000"}, format="json")
    assert created.status_code == 401


# --- PATCH -----------------------------------------------------------------------------------


def test_patch_renames_reconfigures_and_pauses(owner_client, agent_factory):
    agent = agent_factory(config={"daily_trade_limit": 7})

    response = owner_client.patch(
        agent_url(agent),
        {"name": "Renamed", "status": "paused", "config": {"auto_approval_limit": "5000"}},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Renamed"
    assert body["status"] == "paused"
    assert body["config"]["auto_approval_limit"] == "5000.00"
    assert body["config"]["daily_trade_limit"] == 7  # untouched keys stay
    resumed = owner_client.patch(agent_url(agent), {"status": "active"}, format="json")
    assert resumed.json()["status"] == "active"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"budget": "5"}, "budget", "This field is read-only."),
        ({"cash_balance": "99999999"}, "cash_balance", "This field is read-only."),
        ({"owner": "someone"}, "owner", "This field is read-only."),
        ({"name": "kept?", "colour": "red"}, "colour", "Unknown field."),
    ],
)
def test_patch_with_a_read_only_or_unknown_field_is_400_naming_it(
    owner_client, agent_factory, body, field, message
):
    # given
    agent = agent_factory(name="Before")

    # when
    response = owner_client.patch(agent_url(agent), body, format="json")

    # then: the client is told which field was refused, and nothing changed
    assert response.status_code == 400, response.content
    assert response.json()["errors"] == {field: [message]}
    agent.refresh_from_db()
    assert agent.name == "Before"
    assert agent.cash_balance == agent.budget == Decimal("100000.00")


def test_create_with_an_unknown_field_is_400_naming_it(owner_client):
    response = owner_client.post(
        "/api/v1/agents", {"name": "Bot", "budget": "5000", "cash": "1"}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["errors"] == {"cash": ["Unknown field."]}


@pytest.mark.parametrize("status", ["terminated", "suspended", "asleep"])
def test_patch_cannot_set_other_statuses(owner_client, agent_factory, status):
    agent = agent_factory()

    response = owner_client.patch(agent_url(agent), {"status": status}, format="json")

    assert response.status_code == 400
    assert "status" in response.json()["errors"]
    agent.refresh_from_db()
    assert agent.status == "active"


def test_patch_validates_config(owner_client, agent_factory):
    agent = agent_factory()

    response = owner_client.patch(
        agent_url(agent), {"config": {"approval_budget_fraction": "0"}}, format="json"
    )

    assert response.status_code == 400
    assert "approval_budget_fraction" in response.json()["errors"]["config"]


# --- DELETE: the kill switch -------------------------------------------------------------------


def test_delete_terminates_cancels_orders_and_releases_reservations(
    owner_client, agent_factory, prices
):
    # given an agent with shares, a resting buy, a resting sell and an order pending approval
    agent = agent_factory()
    buy(owner_client, agent, quantity="10")
    resting_buy = buy(owner_client, agent, type="limit", limit_price="90.00", quantity="5")
    resting_sell = buy(
        owner_client, agent, side="sell", type="limit", limit_price="150.00", quantity="10"
    )
    pending = buy(owner_client, agent, symbol="MSFT", quantity="100")
    assert [r.json()["status"] for r in (resting_buy, resting_sell, pending)] == [
        "open",
        "open",
        "pending_approval",
    ]

    # when its owner pulls the kill switch
    response = owner_client.delete(agent_url(agent))

    # then it is terminated, every open order cancelled, every reservation released
    assert response.status_code == 204
    agent.refresh_from_db()
    assert agent.status == "terminated"
    assert agent.terminated_at is not None
    assert agent.reserved_cash == 0
    assert agent.positions.get(symbol="AAPL").reserved_quantity == 0
    assert agent.positions.get(symbol="AAPL").quantity == 10  # holdings stay
    statuses = set(Trade.objects.filter(agent=agent).values_list("status", flat=True))
    assert statuses == {"filled", "cancelled"}
    approval = ApprovalRequest.objects.get(trade_id=pending.json()["id"])
    assert approval.status == "cancelled"
    assert UsageEvent.objects.filter(agent=agent, code="agent_terminations").count() == 1
    assert len(buffered_events(agent, event="agent.terminated")) == 1
    assert len(buffered_events(agent, event="trade.cancelled")) == 3
    # the row stays readable, cannot trade, cannot be revived, and DELETE again is harmless
    assert owner_client.get(agent_url(agent)).json()["status"] == "terminated"
    assert buy(owner_client, agent).status_code == 409
    revive = owner_client.patch(agent_url(agent), {"status": "active"}, format="json")
    assert revive.status_code == 409
    assert owner_client.delete(agent_url(agent)).status_code == 204


# --- portfolio -------------------------------------------------------------------------------


def test_portfolio_values_positions_at_current_prices(owner_client, agent_factory, prices):
    agent = agent_factory()
    buy(owner_client, agent, quantity="10")
    buy(owner_client, agent, symbol="MSFT", quantity="3")
    market.set_price("AAPL", "97.50")

    body = owner_client.get(agent_url(agent, "/portfolio")).json()

    assert body["agent_id"] == str(agent.pk)
    assert body["cash_balance"] == "98400.00"
    assert body["positions_value"] == "1575.00"
    assert body["total_value"] == "99975.00"
    assert body["unrealized_pnl"] == "-25.00"
    assert body["realized_pnl"] == "0.00"
    by_symbol = {row["symbol"]: row for row in body["positions"]}
    assert by_symbol["AAPL"]["unrealized_pnl"] == "-25.00"
    assert by_symbol["AAPL"]["current_price"] == "97.50"
    assert by_symbol["MSFT"]["market_value"] == "600.00"


def test_portfolio_history_and_its_window(owner_client, agent_factory, prices):
    # given an agent's creation point, and a market tick a minute after it bought shares
    agent = agent_factory()
    buy(owner_client, agent, quantity="10")
    market_tick(now=timezone.now() + timedelta(minutes=2), force=True)

    history = owner_client.get(agent_url(agent, "/portfolio/history"), {"days": 1}).json()

    assert len(history) == 2
    assert set(history[0]) == {"timestamp", "total_value", "cash_balance"}
    assert owner_client.get(agent_url(agent, "/portfolio/history"), {"days": 0}).status_code == 400
