"""Concurrent orders of one agent never spend the same cash twice (PostgreSQL row locks)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.helpers import assert_books_balance, race, submit
from trades.models import Trade


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_buys_of_ten_percent_accept_exactly_ten(
    client_for, owner, agent_factory, prices
):
    # given 100,000 of cash, no approval and no position limit in the way
    agent = agent_factory(
        budget="100000",
        config={
            "auto_approval_limit": "1000000",
            "approval_budget_fraction": "1",
            "max_position_fraction": "1",
        },
    )

    # when 20 buys of 100 AAPL at 100.00 (10 % of the cash each) arrive at once
    responses = race(
        20, lambda _: submit(client_for(owner), agent, symbol="AAPL", side="buy", quantity="100")
    )

    # then exactly 10 are filled, the others find no cash left, and the books balance
    codes = sorted(response.status_code for response in responses)
    assert codes == [201] * 10 + [402] * 10
    assert Trade.objects.filter(agent=agent, status="filled").count() == 10
    assert Trade.objects.filter(agent=agent).count() == 10
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("0.00")
    assert_books_balance(agent)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_resting_buys_reserve_within_cash(client_for, owner, agent_factory, prices):
    agent = agent_factory(
        budget="10000",
        config={"approval_budget_fraction": "1", "max_position_fraction": "1"},
    )

    responses = race(
        8,
        lambda _: submit(
            client_for(owner), agent, symbol="GOOGL", side="buy", quantity="50",
            type="limit", limit_price="40.00",
        ),
    )  # fmt: skip

    # 50 x 40 = 2,000 reserved each: five fit in 10,000
    assert sorted(r.status_code for r in responses) == [201] * 5 + [402] * 3
    agent.refresh_from_db()
    assert agent.reserved_cash == agent.cash_balance == Decimal("10000.00")
    assert_books_balance(agent)
