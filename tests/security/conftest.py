"""Fixtures of the security tests: two owners, each with an agent that has an open order, a
filled order and an order waiting for approval, and an operator.

Everything is created through the REST API, as a client would, so ids, rows and side effects
are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient


@dataclass
class Estate:
    """One owner's agent and the objects hanging off it."""

    user: object
    token: str
    client: APIClient
    agent_id: str
    open_trade_id: str
    filled_trade_id: str
    pending_trade_id: str
    approval_request_id: str


def _post(client: APIClient, path: str, body: dict, status: int) -> dict:
    response = client.post(path, body, format="json")
    assert response.status_code == status, response.content
    return response.json()


@pytest.fixture
def estate_for(client_for, aapl_at_100):
    """Build an Estate for a user: agent, open limit buy, filled buy, pending approval."""
    from rest_framework.authtoken.models import Token

    def make(user, *, name: str = "Fuzzed agent") -> Estate:
        client = client_for(user)
        agent = _post(client, "/api/v1/agents", {"name": name, "budget": "100000"}, 201)
        trades = f"/api/v1/agents/{agent['id']}/trades"
        resting = _post(
            client,
            trades,
            {
                "symbol": "AAPL",
                "side": "buy",
                "type": "limit",
                "quantity": "5",
                "limit_price": "50.00",
                "time_in_force": "gtc",
            },
            201,
        )
        assert resting["status"] == "open"
        filled = _post(client, trades, {"symbol": "AAPL", "side": "buy", "quantity": "3"}, 201)
        assert filled["status"] == "filled"
        pending = _post(client, trades, {"symbol": "AAPL", "side": "buy", "quantity": "150"}, 202)
        return Estate(
            user=user,
            token=Token.objects.get(user=user).key,
            client=client,
            agent_id=agent["id"],
            open_trade_id=resting["id"],
            filled_trade_id=filled["id"],
            pending_trade_id=pending["id"],
            approval_request_id=pending["approval_request_id"],
        )

    return make


@pytest.fixture
def mine(owner, estate_for) -> Estate:
    return estate_for(owner, name="Mine")


@pytest.fixture
def theirs(other_owner, estate_for) -> Estate:
    return estate_for(other_owner, name="Theirs")
