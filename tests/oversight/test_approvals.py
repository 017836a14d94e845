"""Human approval of large orders through the REST API (SPEC §5 Oversight)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import grpc
import pytest
from django.core.management import call_command
from django.utils import timezone

from agents.models import Agent
from metering.models import UsageEvent
from oversight.models import ApprovalDecision, ApprovalRequest
from oversight.services import CLOSED, EXPIRED_REASON, oversight_request_close
from tests.helpers import approve_url, buffered_events, trades_url
from trades.models import Trade
from trades.services import approvals_expire_due

pytestmark = pytest.mark.django_db

REQUEST_KEYS = {
    "id",
    "trade_id",
    "agent_id",
    "order",
    "amount",
    "status",
    "priority",
    "reason",
    "risk",
    "approvals_required",
    "decisions",
    "created_at",
    "expires_at",
    "resolved_at",
}


def reject_url(request_id) -> str:
    return f"/api/v1/oversight/requests/{request_id}/reject"


def detail_url(request_id) -> str:
    return f"/api/v1/oversight/requests/{request_id}"


def _snapshot(agent: Agent, trade_id) -> tuple:
    """What a failed decision must leave untouched."""
    agent.refresh_from_db()
    trade = Trade.objects.get(pk=trade_id)
    approval = ApprovalRequest.objects.get(trade=trade)
    return (
        agent.cash_balance,
        agent.reserved_cash,
        trade.status,
        trade.reserved_amount,
        approval.status,
        approval.resolved_at,
        approval.decisions.count(),
    )


def test_a_large_order_waits_for_approval_with_a_risk_assessment(pending_request, owner_client):
    # given / when
    agent, trade = pending_request()

    # then
    assert trade["status"] == "pending_approval"
    request_id = trade["approval_request_id"]
    body = owner_client.get(detail_url(request_id)).json()
    assert set(body) == REQUEST_KEYS
    assert body["trade_id"] == trade["id"]
    assert body["agent_id"] == str(agent.pk)
    # the order it is about, so the operator needs no second call
    assert body["order"] == {
        "symbol": trade["symbol"],
        "side": "buy",
        "quantity": trade["quantity"],
        "type": trade["type"],
        "limit_price": trade["limit_price"],
        "stop_price": None,
        "time_in_force": trade["time_in_force"],
    }
    assert body["amount"] == "20000.00"
    assert body["status"] == "pending"
    assert body["approvals_required"] == 1
    assert body["decisions"] == []
    assert body["resolved_at"] is None
    assert "auto_approval_limit" in body["reason"]
    assert body["priority"] in {"low", "medium", "high", "urgent"}
    risk = body["risk"]
    assert 0 <= risk["score"] <= 100
    assert risk["level"] in {"low", "medium", "high", "critical"}
    assert {f["factor"] for f in risk["factors"]} == {
        "notional_vs_budget",
        "concentration",
        "risk_tolerance",
        "volatility",
    }
    assert risk["score"] == sum(f["points"] for f in risk["factors"])
    expires_at = ApprovalRequest.objects.get(pk=request_id).expires_at
    expected = timezone.now() + timedelta(hours=24)
    assert abs((expires_at - expected).total_seconds()) < 60
    assert len(buffered_events(agent, event="approval.requested")) == 1
    assert UsageEvent.objects.filter(agent=agent, code="oversight_requests").count() == 1


def test_operator_approves_and_the_trade_fills(pending_request, operator, client_for):
    # given
    agent, trade = pending_request()
    request_id = trade["approval_request_id"]

    # when
    response = client_for(operator).post(
        approve_url(request_id), {"reason": "looks fine"}, format="json"
    )

    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "approved"
    assert body["resolved_at"] is not None
    (decision,) = body["decisions"]
    assert decision["approver"] == "operator"
    assert decision["decision"] == "approved"
    assert decision["reason"] == "looks fine"
    assert decision["decided_at"]
    filled = Trade.objects.get(pk=trade["id"])
    assert filled.status == "filled"
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("80000.00")
    assert agent.reserved_cash == Decimal("0")
    assert agent.positions.get(symbol="AAPL").quantity == Decimal("200")
    (completed,) = buffered_events(agent, event="approval.completed")
    assert completed.channel == "oversight"
    assert completed.data["status"] == "approved"
    assert completed.data["decisions"][0]["approver"] == "operator"


def test_rejection_with_a_reason_releases_the_reservation(
    pending_request, operator, client_for, caplog
):
    # given
    caplog.set_level("INFO", logger="trading_demo.oversight")
    agent, trade = pending_request()
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("20000.00")

    # when
    response = client_for(operator).post(
        reject_url(trade["approval_request_id"]), {"reason": "too concentrated"}, format="json"
    )

    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "rejected"
    assert body["decisions"][0]["decision"] == "rejected"
    assert body["decisions"][0]["reason"] == "too concentrated"
    rejected = Trade.objects.get(pk=trade["id"])
    assert rejected.status == "rejected"
    assert "too concentrated" in rejected.rejection_reason
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("0")
    assert agent.cash_balance == Decimal("100000.00")
    assert not agent.positions.filter(symbol="AAPL", quantity__gt=0).exists()
    (event,) = buffered_events(agent, event="approval.completed")
    assert event.data["status"] == "rejected"
    assert f"operator rejected approval request {trade['approval_request_id']}" in caplog.text


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}])
def test_rejection_needs_a_reason(pending_request, operator, client_for, body):
    agent, trade = pending_request()
    before = _snapshot(agent, trade["id"])

    response = client_for(operator).post(
        reject_url(trade["approval_request_id"]), body, format="json"
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert "reason" in response.json()["errors"]
    assert _snapshot(agent, trade["id"]) == before


def test_an_owner_cannot_approve_their_own_agent_even_as_operator(
    user_factory, pending_request, client_for
):
    # given: an operator who owns the agent
    operator_owner = user_factory(username="boss", operator=True)
    agent, trade = pending_request(user=operator_owner)
    before = _snapshot(agent, trade["id"])

    # when
    approve = client_for(operator_owner).post(approve_url(trade["approval_request_id"]))
    reject = client_for(operator_owner).post(
        reject_url(trade["approval_request_id"]), {"reason": "mine"}, format="json"
    )

    # then
    for response in (approve, reject):
        assert response.status_code == 403
        assert "self-approval" in response.json()["type"]
    assert _snapshot(agent, trade["id"]) == before


def test_only_operators_decide(pending_request, owner_client, user_factory, client_for):
    # given
    agent, trade = pending_request()
    request_id = trade["approval_request_id"]
    before = _snapshot(agent, trade["id"])
    stranger = client_for(user_factory(username="stranger"))

    # when: the (non-operator) owner tries, and a user who cannot even see it
    own = owner_client.post(approve_url(request_id))
    other = stranger.post(approve_url(request_id))
    other_reject = stranger.post(reject_url(request_id), {"reason": "x"}, format="json")

    # then
    assert own.status_code == 403
    assert "forbidden" in own.json()["type"]
    assert other.status_code == 404
    assert other_reject.status_code == 404
    assert stranger.get(detail_url(request_id)).status_code == 404
    assert _snapshot(agent, trade["id"]) == before


def test_a_second_decision_or_a_decided_request_is_a_conflict(
    pending_request, operator, second_operator, client_for
):
    # given: a request needing two approvals, approved once by `operator`
    _agent, trade = pending_request(quantity=1000, budget="1000000")
    request_id = trade["approval_request_id"]
    first = client_for(operator).post(approve_url(request_id))
    assert first.status_code == 200

    # when: the same operator decides again
    again = client_for(operator).post(approve_url(request_id))
    again_reject = client_for(operator).post(
        reject_url(request_id), {"reason": "changed my mind"}, format="json"
    )

    # then
    assert again.status_code == 409
    assert again_reject.status_code == 409
    assert ApprovalDecision.objects.filter(request_id=request_id).count() == 1

    # when: the request is completed, any further decision conflicts
    assert client_for(second_operator).post(approve_url(request_id)).status_code == 200
    late = client_for(second_operator).post(
        reject_url(request_id), {"reason": "too late"}, format="json"
    )
    assert late.status_code == 409
    assert "conflict" in late.json()["type"]


def test_two_distinct_approvers_are_needed_at_100000(
    pending_request, operator, second_operator, client_for
):
    # given
    agent, trade = pending_request(quantity=1000, budget="1000000")
    request_id = trade["approval_request_id"]
    body = client_for(operator).get(detail_url(request_id)).json()
    assert body["approvals_required"] == 2
    assert body["priority"] in {"high", "urgent"}

    # when: the first approval
    first = client_for(operator).post(approve_url(request_id))

    # then: still pending, the trade still waits
    assert first.status_code == 200
    assert first.json()["status"] == "pending"
    assert len(first.json()["decisions"]) == 1
    assert Trade.objects.get(pk=trade["id"]).status == "pending_approval"
    assert not buffered_events(agent, event="approval.completed")

    # when: a second, distinct operator approves
    second = client_for(second_operator).post(approve_url(request_id))

    # then
    assert second.status_code == 200
    assert second.json()["status"] == "approved"
    assert [d["approver"] for d in second.json()["decisions"]] == ["operator", "operator2"]
    assert Trade.objects.get(pk=trade["id"]).status == "filled"
    agent.refresh_from_db()
    assert agent.positions.get(symbol="AAPL").quantity == Decimal("1000")


def test_below_100000_one_approval_is_enough(pending_request, operator, client_for):
    _agent, trade = pending_request(quantity=999, budget="1000000")
    response = client_for(operator).post(approve_url(trade["approval_request_id"]))
    assert response.json()["approvals_required"] == 1
    assert response.json()["status"] == "approved"


def test_expiry_releases_the_reservation(pending_request):
    # given
    agent, trade = pending_request()
    approval = ApprovalRequest.objects.get(pk=trade["approval_request_id"])

    # when: before the deadline nothing happens; after it, the request expires
    assert approvals_expire_due(approval.expires_at - timedelta(seconds=1)) == 0
    expired = approvals_expire_due(approval.expires_at + timedelta(seconds=1))

    # then
    assert expired == 1
    approval.refresh_from_db()
    assert approval.status == "expired"
    assert approval.resolved_at is not None
    assert Trade.objects.get(pk=trade["id"]).status == "expired"
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("0")
    assert agent.cash_balance == Decimal("100000.00")
    (completed,) = buffered_events(agent, event="approval.completed")
    assert completed.data["status"] == "expired"
    assert approvals_expire_due(approval.expires_at + timedelta(days=1)) == 0


def test_an_approval_refused_because_the_expiry_closed_the_request_records_the_expiry(
    pending_request, operator, client_for
):
    # given: the expiry job has closed the request on the oversight service, not yet here
    agent, trade = pending_request()
    approval = ApprovalRequest.objects.get(pk=trade["approval_request_id"])
    assert oversight_request_close(approval.pk, reason=EXPIRED_REASON) == CLOSED

    # when: an operator approves it
    response = client_for(operator).post(approve_url(approval.pk))

    # then: refused, and the server follows the service: the order expired, nobody cancelled it
    assert response.status_code == 409
    approval.refresh_from_db()
    assert approval.status == "expired"
    assert Trade.objects.get(pk=trade["id"]).status == "expired"
    agent.refresh_from_db()
    assert (agent.reserved_cash, agent.cash_balance) == (Decimal("0"), Decimal("100000.00"))


def test_an_expired_request_cannot_be_approved(pending_request, operator, client_for):
    _agent, trade = pending_request()
    approval = ApprovalRequest.objects.get(pk=trade["approval_request_id"])
    approvals_expire_due(approval.expires_at + timedelta(seconds=1))

    response = client_for(operator).post(approve_url(approval.pk))

    assert response.status_code == 409


def test_expire_approvals_command(pending_request):
    # given
    _agent, trade = pending_request()
    later = (timezone.now() + timedelta(days=2)).isoformat()

    # when
    out = StringIO()
    call_command("expire_approvals", "--now", later, stdout=out)

    # then
    assert "Expired 1 approval request(s); 0 failed." in out.getvalue()
    assert ApprovalRequest.objects.get(pk=trade["approval_request_id"]).status == "expired"


def test_expire_approvals_command_refuses_a_bad_time():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("expire_approvals", "--now", "tomorrow", stdout=StringIO())


def test_cancelling_a_waiting_trade_cancels_its_request(pending_request, owner_client):
    # given
    agent, trade = pending_request()

    # when
    response = owner_client.delete(trades_url(agent, trade["id"]))

    # then
    assert response.status_code == 200
    approval = ApprovalRequest.objects.get(pk=trade["approval_request_id"])
    assert approval.status == "cancelled"
    assert approval.resolved_at is not None
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("0")
    (completed,) = buffered_events(agent, event="approval.completed")
    assert completed.data["status"] == "cancelled"


def test_oversight_down_approval_answers_503_and_changes_nothing(
    pending_request, operator, client_for, fresh_reference_services
):
    # given: a request the (fresh) oversight service knows, then the service stops
    agent, trade = pending_request()
    request_id = trade["approval_request_id"]
    before = _snapshot(agent, trade["id"])
    fresh_reference_services.stop(grace=0)

    # when
    approve = client_for(operator).post(approve_url(request_id))
    reject = client_for(operator).post(reject_url(request_id), {"reason": "no"}, format="json")

    # then
    for response in (approve, reject):
        assert response.status_code == 503
        assert "service-unavailable" in response.json()["type"]
        assert "Retry-After" in response
    assert _snapshot(agent, trade["id"]) == before


def test_oversight_failing_a_new_order_persists_nothing(
    agent_factory, submit_order, fresh_reference_services
):
    # given
    agent = agent_factory()
    fresh_reference_services.oversight.fail_with = grpc.StatusCode.UNAVAILABLE

    # when
    response = submit_order(agent, quantity=200)

    # then
    assert response.status_code == 503
    assert not Trade.objects.filter(agent=agent).exists()
    assert not ApprovalRequest.objects.filter(agent=agent).exists()
    assert not UsageEvent.objects.filter(agent=agent).exists()
    agent.refresh_from_db()
    assert agent.reserved_cash == Decimal("0")


def test_approvals_go_on_with_metering_down_and_their_usage_arrives_once(
    pending_request, operator, client_for, fresh_reference_services
):
    from grpc_clients.registry import get_metering_client
    from metering.services import usage_deliver_pending

    # given: a waiting order, its usage so far delivered; then metering fails
    agent, trade = pending_request()
    usage_deliver_pending()
    fresh_reference_services.metering.fail_with = grpc.StatusCode.UNAVAILABLE

    # when: an operator approves
    response = client_for(operator).post(approve_url(trade["approval_request_id"]))

    # then: the trade fills; its usage waits in the outbox
    assert response.status_code == 200
    assert Trade.objects.get(pk=trade["id"]).status == "filled"
    assert usage_deliver_pending()["service_unavailable"] is True
    waiting = UsageEvent.objects.filter(agent=agent, delivery_state="pending")
    assert waiting.exists()

    # when: metering is back and delivery runs twice
    fresh_reference_services.metering.fail_with = None
    usage_deliver_pending(ignore_backoff=True)
    usage_deliver_pending(ignore_backoff=True)

    # then: the service holds exactly the recorded usage, each event once
    local = {
        e.transaction_id: (e.code, e.quantity)
        for e in UsageEvent.objects.filter(agent=agent).exclude(quantity=0)
    }
    remote = [e for e in get_metering_client().stream_events() if e.agent_id == str(agent.pk)]
    remote_usage = {e.transaction_id: (e.code, e.quantity) for e in remote if e.quantity}
    assert len(remote) == len({e.transaction_id for e in remote})
    assert remote_usage == local
    assert "oversight_requests" in {code for code, _ in local.values()}


def test_a_request_the_oversight_service_lost_is_resubmitted_and_decided(
    pending_request, operator, client_for, fresh_reference_services
):
    from grpc_clients.registry import get_oversight_client, reset_clients
    from reference_services.server import start_reference_services

    # given: the oversight service restarts empty (its reference state is in memory)
    _agent, trade = pending_request()
    port = fresh_reference_services.oversight_port
    fresh_reference_services.stop(grace=0)
    restarted = start_reference_services(
        metering_address=None, oversight_address=f"127.0.0.1:{port}"
    )
    try:
        reset_clients()

        # when
        response = client_for(operator).post(approve_url(trade["approval_request_id"]))

        # then: the request was submitted again under its id, then approved
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "approved"
        assert Trade.objects.get(pk=trade["id"]).status == "filled"
        remote = get_oversight_client().get_request_status(trade["approval_request_id"])
        assert remote.state == "approved"
    finally:
        restarted.stop(grace=0)
