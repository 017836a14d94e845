"""Fixtures for the operator-experience tests: staff operators and orders waiting for approval."""

from __future__ import annotations

import pytest

# The browser tests' fixtures: a seeded server process and headless Chromium.
from tests.operator.browser import browser, live_server_process  # noqa: F401


@pytest.fixture
def staff_operator(user_factory):
    """An operator who can open the admin (staff and in the operators group)."""
    return user_factory(username="desk-operator", operator=True, staff=True)


@pytest.fixture
def pending_order(agent_factory):
    """Place a buy that needs exactly one approval; returns its trade (pending_approval).

    AAPL is set to 100.00, so 150 shares are 15,000: above the default auto-approval limit
    (10,000), below the two-approver threshold (100,000) and the position limit (30 %).
    """
    from trades.market import set_price
    from trades.services import trade_submit

    set_price("AAPL", "100.00")

    def place(*, user=None, agent=None, quantity: str = "150"):
        agent = agent or agent_factory(user=user, budget="100000")
        outcome = trade_submit(
            agent_id=agent.pk,
            user=agent.owner,
            data={"symbol": "AAPL", "side": "buy", "type": "market", "quantity": quantity},
        )
        assert outcome.status_code == 202, outcome.body
        trade = outcome.trade
        trade.refresh_from_db()
        assert trade.status == "pending_approval"
        assert trade.approval_request.approvals_required == 1
        return trade

    return place
