"""Concurrency on PostgreSQL: threads released together by a barrier against the real server
code over HTTP. Buying power is never spent twice, an idempotency key executes once, and one
approval request gets exactly one outcome however many actors race for it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from metering.models import UsageEvent
from oversight.models import ApprovalDecision, ApprovalRequest
from tests.helpers import NO_APPROVAL, assert_books_balance, race, trades_url
from trades.models import IdempotencyRecord, Trade
from trades.services import approvals_expire_due

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]

OUTCOME = {"approved": "filled", "rejected": "rejected", "cancelled": "cancelled"}


def test_100_concurrent_buys_where_cash_covers_10_accept_exactly_10(
    client_for, owner, agent_factory, prices
):
    # given 10,000 of cash and buys of 10 AAPL at 100.00 (1,000 each): exactly 10 fit
    agent = agent_factory(budget="10000", config=NO_APPROVAL)
    clients = [client_for(owner) for _ in range(100)]
    order = {"symbol": "AAPL", "side": "buy", "quantity": "10"}

    # when 100 arrive at once
    responses = race(100, lambda i: clients[i].post(trades_url(agent), order, format="json"))

    # then 10 fill, 90 answer 402 with the problem document, and the books balance
    codes = [getattr(r, "status_code", r) for r in responses]
    assert sorted(codes) == [201] * 10 + [402] * 90, codes
    refused = [r.json() for r in responses if r.status_code == 402]
    assert {p["type"].rstrip("/").rsplit("/", 1)[-1] for p in refused} == {"insufficient-funds"}
    assert Trade.objects.filter(agent=agent).count() == 10
    assert Trade.objects.filter(agent=agent, status="filled").count() == 10
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("0.00")
    assert agent.positions.get(symbol="AAPL").quantity == 100
    assert_books_balance(agent)


def test_50_concurrent_submissions_with_one_key_execute_once(
    client_for, owner, agent_factory, prices
):
    # given
    agent = agent_factory(budget="100000", config=NO_APPROVAL)
    clients = [client_for(owner) for _ in range(50)]
    order = {"symbol": "AAPL", "side": "buy", "quantity": "10"}

    # when 50 submissions carry the same Idempotency-Key
    responses = race(
        50,
        lambda i: clients[i].post(
            trades_url(agent), order, format="json", HTTP_IDEMPOTENCY_KEY="one-order"
        ),
    )

    # then one trade, one trade_executions event, 50 identical answers, 49 marked replays
    assert [getattr(r, "status_code", r) for r in responses] == [201] * 50
    bodies = [r.json() for r in responses]
    assert all(body == bodies[0] for body in bodies)
    assert sum(r.get("Idempotent-Replayed") == "true" for r in responses) == 49
    assert Trade.objects.filter(agent=agent).count() == 1
    assert UsageEvent.objects.filter(agent=agent, code="trade_executions").count() == 1
    assert IdempotencyRecord.objects.filter(agent=agent).count() == 1
    assert_books_balance(agent)


@pytest.mark.parametrize("round_", range(3))
def test_approve_reject_and_cancel_of_one_request_give_exactly_one_outcome(
    round_, pending_request, user_factory, client_for, owner
):
    # given one pending request, two operators and the owner
    agent, trade = pending_request()
    request_id = trade["approval_request_id"]
    approver = client_for(user_factory(operator=True))
    rejecter = client_for(user_factory(operator=True))
    canceller = client_for(owner)
    base = "/api/v1/oversight/requests"
    actions = [
        lambda: approver.post(f"{base}/{request_id}/approve"),
        lambda: rejecter.post(f"{base}/{request_id}/reject", {"reason": "no"}, format="json"),
        lambda: canceller.delete(trades_url(agent, trade["id"])),
    ]

    # when approve, reject and cancel arrive at once
    responses = race(3, lambda i: actions[i]())

    # then one wins (200), the others are 409, and the outcome matches the winner
    codes = [getattr(r, "status_code", r) for r in responses]
    assert sorted(codes) == [200, 409, 409], codes
    approval = ApprovalRequest.objects.get(pk=request_id)
    winner = {0: "approved", 1: "rejected", 2: "cancelled"}[codes.index(200)]
    assert approval.status == winner
    assert Trade.objects.get(pk=trade["id"]).status == OUTCOME[winner]
    assert ApprovalDecision.objects.filter(request=approval).count() == (winner != "cancelled")
    agent.refresh_from_db()
    assert agent.reserved_cash == 0
    assert agent.cash_balance == Decimal("80000.00" if winner == "approved" else "100000.00")
    assert_books_balance(agent)


@pytest.mark.parametrize("round_", range(3))
def test_approve_racing_expiry_gives_one_outcome(round_, pending_request, user_factory, client_for):
    # given a pending request and a clock past its expiry
    agent, trade = pending_request()
    approval = ApprovalRequest.objects.get(pk=trade["approval_request_id"])
    later = approval.expires_at + timedelta(seconds=1)
    approver = client_for(user_factory(operator=True))
    actions = [
        lambda: approver.post(f"/api/v1/oversight/requests/{approval.pk}/approve"),
        lambda: approvals_expire_due(later),
    ]

    # when the approval and the expiry job run at once
    response, expired = race(2, lambda i: actions[i]())

    # then exactly one of them took effect, and the books balance
    approval.refresh_from_db()
    status = Trade.objects.get(pk=trade["id"]).status
    if approval.status == "approved":
        assert (response.status_code, expired, status) == (200, 0, "filled")
    else:
        assert (approval.status, response.status_code, expired, status) == (
            "expired",
            409,
            1,
            "expired",
        )
    assert_books_balance(agent)
