"""What happens to an order when its last approval arrives (trades.services side)."""

from __future__ import annotations

from decimal import Decimal

from tests.helpers import approve_url, assert_books_balance, submit, trades_url
from trades import market


def approve(client, approval_request_id):
    return client.post(approve_url(approval_request_id), {}, format="json")


def test_approval_fills_at_the_price_of_the_moment(owner_client, client_for, operator, agent):
    pending = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="150").json()
    market.set_price("AAPL", "102.00")

    assert approve(client_for(operator), pending["approval_request_id"]).status_code == 200

    trade = owner_client.get(trades_url(agent, pending["id"])).json()
    assert trade["status"] == "filled"
    assert trade["avg_fill_price"] == "102.00"
    assert trade["notional"] == "15300.00"
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("84700.00")
    assert agent.reserved_cash == 0
    assert_books_balance(agent)


def test_approval_rejects_an_order_the_cash_no_longer_covers(
    owner_client, client_for, operator, agent
):
    pending = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="150").json()
    market.set_price("AAPL", "700.00")  # 150 x 700 = 105,000 > 100,000

    approve(client_for(operator), pending["approval_request_id"])

    trade = owner_client.get(trades_url(agent, pending["id"])).json()
    assert trade["status"] == "rejected"
    assert "required 105000.00" in trade["rejection_reason"]
    agent.refresh_from_db()
    assert agent.reserved_cash == 0
    assert agent.cash_balance == agent.budget


def test_an_approved_limit_order_below_the_market_rests(owner_client, client_for, operator, agent):
    pending = submit(
        owner_client, agent, symbol="AAPL", side="buy", quantity="150", type="limit",
        limit_price="95.00", time_in_force="gtc",
    ).json()  # fmt: skip
    assert pending["status"] == "pending_approval"

    approve(client_for(operator), pending["approval_request_id"])

    trade = owner_client.get(trades_url(agent, pending["id"])).json()
    assert trade["status"] == "open"
    assert trade["reserved_amount"] == "14250.00"
    assert_books_balance(agent)
