"""The oversight wrapper against the reference oversight service on an ephemeral port."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from grpc_clients.errors import RemoteConflict, RemoteInvalidArgument, RemoteNotFound


def policy(notional: str, *, budget="1000000", auto="10000", fraction="0.25", **extra):
    return {
        "notional": notional,
        "budget": budget,
        "auto_approval_limit": auto,
        "approval_budget_fraction": fraction,
        **extra,
    }


def submit(client, parameters, *, request_id=None, tenant="tenant-1", subject="BUY 10 AAPL", **kw):
    return client.submit_request(
        request_id=request_id if request_id is not None else str(uuid.uuid4()),
        agent_id="agent-1",
        agent_name="Momentum bot",
        tenant_id=tenant,
        subject=subject,
        description="market order",
        parameters=parameters,
        risk_level="medium",
        priority="medium",
        timeout=kw.pop("timeout", timedelta(hours=24)),
        **kw,
    )


def test_small_order_is_auto_approved_by_the_policy(oversight_client):
    result = submit(oversight_client, policy("5000"))

    status = oversight_client.get_request_status(result.request_id, include_audit_trail=True)
    assert (result.state, result.approvals_required, result.policy_id) == (
        "approved",
        0,
        "default-v1",
    )
    assert status.decision.decision == "approved"
    assert [(t.from_state, t.to_state, t.actor_id) for t in status.transitions] == [
        ("unspecified", "pending", "agent-1"),
        ("pending", "approved", "policy"),
    ]


@pytest.mark.parametrize(
    ("parameters", "approvals_required"),
    [
        (policy("10000"), 1),  # notional == auto_approval_limit
        (policy("5000", budget="20000", auto="1000000"), 1),  # == 0.25 x budget
        (policy("99999.99"), 1),
        (policy("100000"), 2),  # quorum threshold
        (policy("50000", quorum_threshold="50000"), 2),  # the caller may move the threshold
    ],
)
def test_order_at_or_above_a_threshold_waits_for_approval(
    oversight_client, parameters, approvals_required
):
    result = submit(oversight_client, parameters)

    assert (result.state, result.approvals_required) == ("pending", approvals_required)


def test_policy_compares_decimals_not_floats(oversight_client):
    # 0.1 x 3 is exactly 0.3 in Decimal; as floats it is 0.30000000000000004 and would pass.
    result = submit(oversight_client, policy("0.3", budget="3", fraction="0.1", auto="100"))

    assert result.state == "pending"


@pytest.mark.parametrize(
    "parameters",
    [
        {"notional": "5000", "budget": "100000", "auto_approval_limit": "10000"},
        policy("lots"),
        policy("NaN"),
        policy("-1"),
    ],
)
def test_missing_or_bad_policy_parameters_are_invalid(oversight_client, parameters):
    with pytest.raises(RemoteInvalidArgument):
        submit(oversight_client, parameters)


def test_submit_is_idempotent_by_request_id(oversight_client):
    first = submit(oversight_client, policy("20000"), request_id="req-1")
    oversight_client.approve(request_id="req-1", approver_id="op-1", approver_name="Op One")

    again = submit(oversight_client, policy("1"), request_id="req-1")

    assert first.state == "pending"
    assert (again.request_id, again.state, again.approvals_required) == ("req-1", "approved", 1)
    assert oversight_client.list_requests().total_count == 1


def test_empty_request_id_gets_a_generated_uuid(oversight_client):
    result = submit(oversight_client, policy("5000"), request_id="")

    assert uuid.UUID(result.request_id)


def test_quorum_needs_two_distinct_approvers(oversight_client):
    request_id = submit(oversight_client, policy("150000")).request_id

    first = oversight_client.approve(
        request_id=request_id, approver_id="op-1", approver_name="Op One", justification="ok"
    )
    with pytest.raises(RemoteConflict) as same_again:
        oversight_client.approve(request_id=request_id, approver_id="op-1", approver_name="Op One")
    second = oversight_client.approve(
        request_id=request_id, approver_id="op-2", approver_name="Op Two"
    )
    with pytest.raises(RemoteConflict):
        oversight_client.approve(request_id=request_id, approver_id="op-3", approver_name="Op 3")

    assert (first.new_state, first.requires_additional_approvals) == ("pending", True)
    assert same_again.value.code == "ALREADY_EXISTS"
    assert (second.new_state, second.requires_additional_approvals) == ("approved", False)
    status = oversight_client.get_request_status(request_id)
    assert (status.state, status.approvals_received, status.approvals_required) == (
        "approved",
        2,
        2,
    )
    assert status.decision.approver_id == "op-2"


def test_single_approval_approves_below_the_quorum_threshold(oversight_client):
    request_id = submit(oversight_client, policy("20000")).request_id

    approved = oversight_client.approve(
        request_id=request_id, approver_id="op-1", approver_name="Op One"
    )

    assert (approved.new_state, approved.requires_additional_approvals) == ("approved", False)
    assert approved.approved_at.tzinfo is not None


def test_rejection_needs_a_reason_and_closes_the_request(oversight_client):
    request_id = submit(oversight_client, policy("20000")).request_id

    with pytest.raises(RemoteInvalidArgument):
        oversight_client.reject(
            request_id=request_id, rejector_id="op-1", rejector_name="Op", reason="  "
        )
    rejected = oversight_client.reject(
        request_id=request_id, rejector_id="op-1", rejector_name="Op", reason="too risky"
    )
    with pytest.raises(RemoteConflict) as late:
        oversight_client.approve(request_id=request_id, approver_id="op-2", approver_name="Op 2")

    assert (rejected.request_id, rejected.can_resubmit) == (request_id, False)
    assert late.value.code == "FAILED_PRECONDITION"
    status = oversight_client.get_request_status(request_id)
    assert status.state == "rejected"
    assert (status.decision.decision, status.decision.justification) == ("rejected", "too risky")


def test_cancel_withdraws_a_pending_request_once(oversight_client):
    request_id = submit(oversight_client, policy("20000")).request_id

    cancelled = oversight_client.cancel(request_id=request_id, actor_id="owner-1", reason="kill")
    with pytest.raises(RemoteConflict):
        oversight_client.cancel(request_id=request_id, actor_id="owner-1")
    with pytest.raises(RemoteConflict):
        oversight_client.approve(request_id=request_id, approver_id="op-1", approver_name="Op")

    assert cancelled.new_state == "cancelled"
    trail = oversight_client.get_request_status(request_id, include_audit_trail=True).transitions
    assert (trail[-1].to_state, trail[-1].actor_id, trail[-1].reason) == (
        "cancelled",
        "owner-1",
        "kill",
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_request_status("missing"),
        lambda c: c.approve(request_id="missing", approver_id="op", approver_name="Op"),
        lambda c: c.reject(request_id="missing", rejector_id="op", rejector_name="Op", reason="x"),
        lambda c: c.cancel(request_id="missing", actor_id="op"),
    ],
)
def test_unknown_request_is_not_found(oversight_client, call):
    with pytest.raises(RemoteNotFound):
        call(oversight_client)


def test_request_expires_after_its_timeout(services, oversight_client):
    clock = {"now": datetime(2025, 1, 15, 10, 0, tzinfo=UTC)}
    services.oversight.clock = lambda: clock["now"]
    request_id = submit(oversight_client, policy("20000"), timeout=timedelta(minutes=5)).request_id

    clock["now"] += timedelta(minutes=4)
    before = oversight_client.get_request_status(request_id)
    clock["now"] += timedelta(minutes=2)
    after = oversight_client.get_request_status(request_id, include_audit_trail=True)
    with pytest.raises(RemoteConflict):
        oversight_client.approve(request_id=request_id, approver_id="op-1", approver_name="Op")

    assert (before.state, after.state) == ("pending", "expired")
    expiry = after.transitions[-1]
    assert (expiry.from_state, expiry.to_state, expiry.actor_id) == ("pending", "expired", "system")
    assert expiry.timestamp == datetime(2025, 1, 15, 10, 5, tzinfo=UTC)
    assert oversight_client.list_requests(states=["expired"]).total_count == 1


def test_audit_trail_records_every_transition_when_asked(oversight_client):
    request_id = submit(oversight_client, policy("150000")).request_id
    oversight_client.approve(
        request_id=request_id, approver_id="op-1", approver_name="One", justification="fine"
    )
    oversight_client.approve(request_id=request_id, approver_id="op-2", approver_name="Two")

    plain = oversight_client.get_request_status(request_id)
    audited = oversight_client.get_request_status(request_id, include_audit_trail=True)

    assert plain.transitions == []
    assert [(t.from_state, t.to_state, t.actor_id) for t in audited.transitions] == [
        ("unspecified", "pending", "agent-1"),
        ("pending", "pending", "op-1"),
        ("pending", "approved", "op-2"),
    ]
    assert "approval required" in audited.transitions[0].reason
    assert audited.transitions[1].reason == "approval 1 of 2: fine"
    assert all(t.timestamp.tzinfo is not None for t in audited.transitions)
    assert audited.submitted_at <= audited.updated_at


def test_list_filters_by_tenant_and_state_and_pages_newest_first(oversight_client):
    for index in range(5):
        submit(oversight_client, policy("20000"), subject=f"t1-{index}")
    submit(oversight_client, policy("100"), subject="t1-auto")
    submit(oversight_client, policy("20000"), tenant="tenant-2", subject="t2-0")

    subjects, token, pages = [], "", 0
    while True:
        page = oversight_client.list_requests(
            tenant_id="tenant-1", states=["pending"], page_size=2, page_token=token
        )
        pages += 1
        assert page.total_count == 5
        subjects += [r.subject for r in page.requests]
        token = page.next_page_token
        if not token:
            break
    everything = oversight_client.list_requests()

    assert subjects == ["t1-4", "t1-3", "t1-2", "t1-1", "t1-0"]
    assert pages == 3
    assert everything.total_count == 7
    first = everything.requests[0]
    assert (first.subject, first.request_type, first.risk_level) == (
        "t2-0",
        "financial_transaction",
        "medium",
    )
    assert first.parameters["notional"] == "20000"
    assert [r.subject for r in oversight_client.list_requests(states=["approved"]).requests] == [
        "t1-auto"
    ]


def test_list_with_a_forged_page_token_is_invalid(oversight_client):
    with pytest.raises(RemoteInvalidArgument):
        oversight_client.list_requests(page_token="not-a-token")
