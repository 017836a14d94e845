"""Concurrent decisions on one request produce exactly one outcome (PostgreSQL row locks)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from grpc_clients.registry import get_oversight_client
from oversight.models import ApprovalDecision, ApprovalRequest
from tests.helpers import race, trades_url
from trades.models import Trade
from trades.services import approvals_expire_due

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

OUTCOME = {"approved": "filled", "rejected": "rejected", "cancelled": "cancelled"}


def _race(*actions) -> list:
    """Run the actions at the same moment in threads; return their results in order."""
    return race(len(actions), lambda index: actions[index]())


@pytest.mark.parametrize("round_", range(8))
def test_approve_reject_and_cancel_at_once_give_exactly_one_outcome_on_both_sides(
    round_, pending_request, operator, second_operator, client_for
):
    # given
    agent, trade = pending_request()
    request_id = trade["approval_request_id"]
    approver, rejecter = client_for(operator), client_for(second_operator)
    owner = client_for(agent.owner)
    base = "/api/v1/oversight/requests"

    # when
    responses = _race(
        lambda: approver.post(f"{base}/{request_id}/approve"),
        lambda: rejecter.post(f"{base}/{request_id}/reject", {"reason": "no"}, format="json"),
        lambda: owner.delete(trades_url(agent, trade["id"])),
    )

    # then
    codes = [getattr(r, "status_code", r) for r in responses]
    assert sorted(codes) == [200, 409, 409], codes
    approval = ApprovalRequest.objects.get(pk=request_id)
    assert approval.status in OUTCOME
    assert Trade.objects.get(pk=trade["id"]).status == OUTCOME[approval.status]
    assert ApprovalDecision.objects.filter(request=approval).count() <= 1
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("0")
    expected_cash = Decimal("80000.00") if approval.status == "approved" else Decimal("100000.00")
    assert agent.cash_balance == expected_cash
    # and the oversight service recorded the same outcome
    assert get_oversight_client().get_request_status(request_id).state == approval.status


@pytest.mark.parametrize("round_", range(6))
def test_expiry_racing_an_approval_gives_one_outcome_on_both_sides(
    round_, pending_request, operator, client_for
):
    # given
    agent, trade = pending_request()
    approval = ApprovalRequest.objects.get(pk=trade["approval_request_id"])
    later = approval.expires_at + timedelta(seconds=1)
    approver = client_for(operator)

    # when
    response, expired = _race(
        lambda: approver.post(f"/api/v1/oversight/requests/{approval.pk}/approve"),
        lambda: approvals_expire_due(later),
    )

    # then
    approval.refresh_from_db()
    if approval.status == "approved":
        assert (response.status_code, expired) == (200, 0)
        assert Trade.objects.get(pk=trade["id"]).status == "filled"
    else:
        assert (approval.status, response.status_code, expired) == ("expired", 409, 1)
        assert Trade.objects.get(pk=trade["id"]).status == "expired"
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("0")
    # and the oversight service approved it too, or closed it without an approval
    remote = get_oversight_client().get_request_status(str(approval.pk)).state
    if approval.status == "approved":
        assert remote == "approved"
    else:
        assert remote in {"expired", "cancelled"}


def test_two_operators_completing_a_quorum_at_once_execute_once(
    pending_request, operator, second_operator, client_for
):
    # given
    agent, trade = pending_request(quantity=1000, budget="1000000")
    request_id = trade["approval_request_id"]
    first, second = client_for(operator), client_for(second_operator)

    # when
    responses = _race(
        lambda: first.post(f"/api/v1/oversight/requests/{request_id}/approve"),
        lambda: second.post(f"/api/v1/oversight/requests/{request_id}/approve"),
    )

    # then: both approvals count, the trade fills once
    assert [r.status_code for r in responses] == [200, 200]
    approval = ApprovalRequest.objects.get(pk=request_id)
    assert approval.status == "approved"
    assert approval.decisions.count() == 2
    assert Trade.objects.get(pk=trade["id"]).status == "filled"
    agent.refresh_from_db()
    assert agent.positions.get(symbol="AAPL").quantity == Decimal("1000")
    assert agent.cash_balance == Decimal("900000.00")
