"""Authorization over every object route (OWASP API1 BOLA, API2 broken authentication,
API3 mass assignment, API5 function-level authorization).

Each owner sees and acts on their own agents only: another owner's agent, trade or approval
request answers 404 with nothing of it in the body, and nothing changes; no or a bad token is
401; deciding approvals needs an operator; fields a client may not set are ignored or refused.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from tests.helpers import PROBLEM_KEYS, assert_problem

# (label, method, path template, JSON body); {agent}, {trade}, {request} are the target's ids.
OBJECT_ROUTES = [
    ("agent detail", "get", "/api/v1/agents/{agent}", None),
    ("agent update", "patch", "/api/v1/agents/{agent}", {"name": "Hijacked", "status": "paused"}),
    ("agent terminate", "delete", "/api/v1/agents/{agent}", None),
    ("portfolio", "get", "/api/v1/agents/{agent}/portfolio", None),
    ("portfolio history", "get", "/api/v1/agents/{agent}/portfolio/history?days=7", None),
    ("trade list", "get", "/api/v1/agents/{agent}/trades", None),
    ("trade detail", "get", "/api/v1/agents/{agent}/trades/{trade}", None),
    (
        "trade submit",
        "post",
        "/api/v1/agents/{agent}/trades",
        {"symbol": "AAPL", "side": "buy", "quantity": "1"},
    ),
    ("trade cancel", "delete", "/api/v1/agents/{agent}/trades/{trade}", None),
    ("approval detail", "get", "/api/v1/oversight/requests/{request}", None),
    ("approval approve", "post", "/api/v1/oversight/requests/{request}/approve", {"reason": "ok"}),
    ("approval reject", "post", "/api/v1/oversight/requests/{request}/reject", {"reason": "no"}),
    ("usage", "get", "/api/v1/metering/agents/{agent}/usage", None),
    ("quota", "get", "/api/v1/metering/agents/{agent}/quota", None),
    (
        "usage event",
        "post",
        "/api/v1/metering/events",
        {"agent_id": "{agent}", "event_type": "api_call", "code": "api_calls", "quantity": 1},
    ),
]
LIST_ROUTES = [
    "/api/v1/agents",
    "/api/v1/oversight/requests",
    "/api/v1/oversight/requests?agent_id={agent}",
    "/api/v1/market/prices",
]
ROUTE_IDS = [route[0] for route in OBJECT_ROUTES]


def _fill(template, estate):
    text = json.dumps(template) if not isinstance(template, str) else template
    text = (
        text.replace("{agent}", estate.agent_id)
        .replace("{trade}", estate.open_trade_id)
        .replace("{request}", estate.approval_request_id)
    )
    return json.loads(text) if not isinstance(template, str) else text


def _call(client: APIClient, method: str, path: str, body):
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, body, format="json")


def _snapshot(estate) -> dict:
    """Every row an attack on the estate could change."""
    from agents.models import Agent
    from metering.models import UsageEvent
    from oversight.models import ApprovalRequest
    from trades.models import Trade

    agent = Agent.objects.get(pk=estate.agent_id)
    return {
        "agent": (
            agent.name,
            agent.status,
            agent.cash_balance,
            agent.reserved_cash,
            agent.owner_id,
            agent.budget,
        ),
        "trades": sorted(
            Trade.objects.filter(agent_id=estate.agent_id).values_list(
                "id", "status", "filled_quantity", "reserved_amount"
            )
        ),
        "approvals": sorted(
            ApprovalRequest.objects.filter(trade__agent_id=estate.agent_id).values_list(
                "id", "status"
            )
        ),
        "usage": sorted(
            UsageEvent.objects.filter(agent_id=estate.agent_id)
            .exclude(code="api_calls")
            .values_list("id", flat=True)
        ),
    }


def _secrets_of(estate) -> list[str]:
    """Values of the target that must never appear in an answer to someone else."""
    return [
        "Theirs",  # the agent's name
        estate.filled_trade_id,
        estate.pending_trade_id,
        estate.user.username,
        estate.token,
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(("label", "method", "template", "body"), OBJECT_ROUTES, ids=ROUTE_IDS)
def test_another_owners_object_is_404_with_none_of_its_data(
    mine, theirs, operator, label, method, template, body
):
    # given my token and the other owner's ids
    path, payload = _fill(template, theirs), _fill(body, theirs) if body else None
    before = _snapshot(theirs)
    # when
    response = _call(mine.client, method, path, payload)
    # then
    problem = assert_problem(response, 404, "not-found")
    assert set(problem) <= PROBLEM_KEYS | {"errors"}
    text = response.content.decode()
    for secret in _secrets_of(theirs):
        assert secret not in text, (label, secret)
    assert _snapshot(theirs) == before


@pytest.mark.django_db
@pytest.mark.parametrize("template", LIST_ROUTES)
def test_lists_never_show_another_owners_objects(mine, theirs, template):
    response = mine.client.get(_fill(template, theirs))
    assert response.status_code == 200
    text = response.content.decode()
    assert theirs.agent_id not in text
    for secret in _secrets_of(theirs):
        assert secret not in text


@pytest.mark.django_db
@pytest.mark.parametrize(("label", "method", "template", "body"), OBJECT_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("credentials", [None, "Token not-a-real-token", "Bearer x", "Token "])
def test_no_or_invalid_token_is_401(mine, label, method, template, body, credentials):
    # given a client without a valid token
    client = APIClient()
    if credentials:
        client.credentials(HTTP_AUTHORIZATION=credentials)
    before = _snapshot(mine)
    # when
    response = _call(client, method, _fill(template, mine), _fill(body, mine) if body else None)
    # then
    assert_problem(response, 401, "unauthorized")
    assert mine.agent_id.encode() not in response.content.replace(
        response.json()["instance"].encode(), b""
    )
    assert _snapshot(mine) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/api/v1/agents", "/api/v1/oversight/requests", "/api/v1/market/prices"]
)
def test_lists_need_a_token(anon_client, path):
    assert_problem(anon_client.get(path), 401, "unauthorized")


@pytest.mark.django_db
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_owners_cannot_decide_approvals_even_their_own(mine, decision):
    # given the owner's own pending request
    before = _snapshot(mine)
    path = f"/api/v1/oversight/requests/{mine.approval_request_id}/{decision}"
    # when
    response = mine.client.post(path, {"reason": "I approve myself"}, format="json")
    # then
    assert_problem(response, 403, "forbidden")
    assert _snapshot(mine) == before


@pytest.mark.django_db
def test_an_operator_who_owns_the_agent_cannot_approve_it(operator, estate_for):
    estate = estate_for(operator, name="Operator's own")
    response = estate.client.post(
        f"/api/v1/oversight/requests/{estate.approval_request_id}/approve", {}, format="json"
    )
    assert_problem(response, 403, "self-approval")


# --- mass assignment ------------------------------------------------------------------------


@pytest.mark.django_db
def test_agent_create_refuses_owner_status_and_balances(mine, theirs):
    # given a new agent's body that also claims members only the server sets
    server_set = {
        "owner": theirs.user.pk,
        "owner_id": theirs.user.pk,
        "status": "suspended",
        "cash_balance": "99999999",
        "reserved_cash": "-5000",
        "available_cash": "99999999",
        "realized_pnl": "1000000",
        "id": theirs.agent_id,
    }
    before = _snapshot(theirs)
    # when
    response = mine.client.post(
        "/api/v1/agents", {"name": "Greedy", "budget": "5000", **server_set}, format="json"
    )
    # then it is refused, naming each of them, and nothing is created or changed
    from agents.models import Agent

    problem = assert_problem(response, 400, "validation-error")
    assert set(problem["errors"]) == set(server_set)
    assert not Agent.objects.filter(name="Greedy").exists()
    assert _snapshot(theirs) == before


@pytest.mark.django_db
def test_agent_patch_cannot_touch_owner_balances_or_budget(mine, theirs):
    # given
    from agents.models import Agent

    before = _snapshot(mine)
    # when
    response = mine.client.patch(
        f"/api/v1/agents/{mine.agent_id}",
        {
            "owner": theirs.user.pk,
            "owner_id": theirs.user.pk,
            "cash_balance": "99999999",
            "reserved_cash": "0",
            "budget": "1000000",
            "realized_pnl": "5",
            "terminated_at": "2020-01-01T00:00:00Z",
        },
        format="json",
    )
    # then it is refused, naming each of them, and nothing changed
    problem = assert_problem(response, 400, "validation-error")
    assert set(problem["errors"]) == {
        "owner", "owner_id", "cash_balance", "reserved_cash", "budget", "realized_pnl",
        "terminated_at",
    }  # fmt: skip
    assert _snapshot(mine) == before
    agent = Agent.objects.get(pk=mine.agent_id)
    assert agent.terminated_at is None


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["terminated", "suspended", "active-ish"])
def test_agent_patch_cannot_set_a_status_other_than_active_or_paused(mine, status):
    before = _snapshot(mine)
    response = mine.client.patch(
        f"/api/v1/agents/{mine.agent_id}", {"status": status}, format="json"
    )
    problem = assert_problem(response, 400, "validation-error")
    assert set(problem["errors"]) == {"status"}
    assert _snapshot(mine) == before


@pytest.mark.django_db
def test_order_fields_set_by_the_server_cannot_be_posted(mine, theirs):
    # given a resting limit buy that claims to be filled already, for someone else's agent
    from trades.models import Trade

    server_set = {
        "status": "filled",
        "filled_quantity": "2",
        "avg_fill_price": "0.01",
        "notional": "0.02",
        "reserved_amount": "0",
        "agent_id": theirs.agent_id,
        "agent": theirs.agent_id,
        "approval_request_id": theirs.approval_request_id,
        "rejection_reason": "none",
        "filled_at": "2020-01-01T00:00:00Z",
        "id": theirs.open_trade_id,
    }
    mine_before, theirs_before = _snapshot(mine), _snapshot(theirs)
    # when
    response = mine.client.post(
        f"/api/v1/agents/{mine.agent_id}/trades",
        {
            "symbol": "AAPL",
            "side": "buy",
            "type": "limit",
            "limit_price": "40.00",
            "quantity": "2",
            "time_in_force": "gtc",
            **server_set,
        },
        format="json",
    )
    # then the order is refused, naming each member only the server sets, and nothing changed
    problem = assert_problem(response, 400, "validation-error")
    assert set(problem["errors"]) == set(server_set)
    assert not Trade.objects.filter(limit_price=Decimal("40.00")).exists()
    assert _snapshot(mine) == mine_before
    assert _snapshot(theirs) == theirs_before


@pytest.mark.django_db
def test_a_decision_body_setting_status_or_approvals_required_is_refused(
    mine, operator, client_for
):
    # given an operator rejecting a request with fields that would approve it
    from oversight.models import ApprovalRequest
    from trades.models import Trade

    before = ApprovalRequest.objects.get(pk=mine.approval_request_id)
    response = client_for(operator).post(
        f"/api/v1/oversight/requests/{mine.approval_request_id}/reject",
        {
            "reason": "too big",
            "status": "approved",
            "approvals_required": 0,
            "decision": "approve",
            "approver": mine.user.username,
        },
        format="json",
    )
    # then: the fields it may not set are named, and nothing was decided
    assert response.status_code == 400, response.content
    assert sorted(response.json()["errors"]) == [
        "approvals_required",
        "approver",
        "decision",
        "status",
    ]
    after = ApprovalRequest.objects.get(pk=mine.approval_request_id)
    assert after.status == "pending"
    assert after.approvals_required == before.approvals_required
    assert Trade.objects.get(pk=mine.pending_trade_id).status == "pending_approval"


# --- WebSocket ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_websocket_subscription_to_another_owners_agent_is_refused(
    owner, other_owner, agent_factory, token_for
):
    from channels.db import database_sync_to_async

    from tests.realtime.helpers import open_socket

    # given
    theirs = await database_sync_to_async(agent_factory)(user=other_owner, name="Theirs")
    token = await database_sync_to_async(token_for)(owner)
    communicator, connected = await open_socket(token)
    assert connected
    try:
        for channel in ("portfolio", "trades", "oversight"):
            # when
            await communicator.send_json_to(
                {"action": "subscribe", "channel": channel, "agent_id": str(theirs.pk)}
            )
            answer = await communicator.receive_json_from(timeout=5)
            # then
            assert (answer["type"], answer["code"]) == ("error", "forbidden"), answer
            assert "Theirs" not in json.dumps(answer)
        await communicator.send_json_to({"action": "subscribe", "channel": "oversight"})
        answer = await communicator.receive_json_from(timeout=5)
        assert (answer["type"], answer["code"]) == ("error", "forbidden"), answer
    finally:
        await communicator.disconnect()
