from __future__ import annotations

from decimal import Decimal

import pytest

PRICE = Decimal("100.00")


@pytest.fixture
def second_operator(user_factory):
    return user_factory(username="operator2", operator=True)


@pytest.fixture
def aapl_at_100(db):
    """AAPL at exactly 100.00, so an order's notional is 100 times its quantity."""
    from trades.market import set_price

    set_price("AAPL", PRICE)
    return PRICE


@pytest.fixture
def submit_order(client_for, aapl_at_100):
    """POST a market buy of AAPL for the agent as its owner; returns the response."""

    def submit(agent, *, quantity: int, side: str = "buy", **extra):
        body = {"symbol": "AAPL", "side": side, "quantity": str(quantity), **extra}
        return client_for(agent.owner).post(
            f"/api/v1/agents/{agent.pk}/trades", body, format="json"
        )

    return submit


@pytest.fixture
def pending_request(agent_factory, submit_order):
    """A 20,000 buy waiting for one approval; returns (agent, trade JSON)."""

    def make(*, user=None, quantity: int = 200, budget: str = "100000"):
        agent = agent_factory(user=user, budget=budget) if user else agent_factory(budget=budget)
        response = submit_order(agent, quantity=quantity)
        assert response.status_code == 202, response.content
        return agent, response.json()

    return make
