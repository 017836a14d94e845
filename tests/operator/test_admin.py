"""The approvals queue in the Django admin goes through the same service as the REST API."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from realtime.models import AgentEventBatch

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:oversight_approvalrequest_changelist"


def _admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _run_action(client: Client, action: str, trades, **extra):
    data = {
        "action": action,
        ACTION_CHECKBOX_NAME: [str(trade.approval_request.pk) for trade in trades],
        **extra,
    }
    return client.post(reverse(CHANGELIST), data, follow=True)


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _status(trade) -> str:
    trade.refresh_from_db()
    return trade.status


def test_operator_approves_from_the_admin_and_the_trade_fills(staff_operator, pending_order):
    # given
    trade = pending_order()
    client = _admin_client(staff_operator)

    # when
    response = _run_action(client, "approve_requests", [trade])

    # then
    assert response.status_code == 200
    assert _status(trade) == "filled"
    trade.approval_request.refresh_from_db()
    assert trade.approval_request.status == "approved"
    decision = trade.approval_request.decisions.get()
    assert (decision.approver, decision.decision) == (staff_operator, "approved")
    name = trade.agent.name
    assert f"Approved: buy 150 AAPL for {name} (order filled)." in _messages(response)


def test_pending_requests_come_first_in_the_queue(staff_operator, pending_order, agent_factory):
    # given: an older request already decided, a newer one pending, then another pending
    decided = pending_order()
    _run_action(_admin_client(staff_operator), "approve_requests", [decided])
    waiting = [pending_order(), pending_order()]

    # when
    response = _admin_client(staff_operator).get(reverse(CHANGELIST))

    # then
    shown = [row.pk for row in response.context["cl"].result_list]
    assert shown[:2] == [t.approval_request.pk for t in reversed(waiting)]
    assert shown[2] == decided.approval_request.pk


def test_the_agents_own_staff_owner_cannot_approve(user_factory, pending_order):
    # given: a staff user (an operator by role) who owns the agent
    owner = user_factory(username="staff-owner", staff=True, operator=True)
    trade = pending_order(user=owner)

    # when
    response = _run_action(_admin_client(owner), "approve_requests", [trade])

    # then: refused with the self-approval problem as a message, nothing decided
    assert response.status_code == 200
    assert any("Self-Approval" in text and "403" in text for text in _messages(response))
    assert _status(trade) == "pending_approval"
    assert not trade.approval_request.decisions.exists()


def test_a_non_staff_owner_cannot_reach_the_admin_action(owner, pending_order):
    # given
    trade = pending_order(user=owner)
    client = _admin_client(owner)

    # when
    response = client.post(
        reverse(CHANGELIST),
        {"action": "approve_requests", ACTION_CHECKBOX_NAME: [str(trade.approval_request.pk)]},
    )

    # then: sent to the admin login, nothing decided
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]
    assert _status(trade) == "pending_approval"


def test_reject_asks_for_a_reason_first(staff_operator, pending_order):
    # given
    trade = pending_order()

    # when: the action is chosen
    response = _run_action(_admin_client(staff_operator), "reject_requests", [trade])

    # then: an intermediate page with a required reason field, nothing rejected yet
    assert response.status_code == 200
    assert b'name="reason"' in response.content
    assert b"Reason for the rejection" in response.content
    assert _status(trade) == "pending_approval"


def test_reject_without_a_reason_is_refused(staff_operator, pending_order):
    # given
    trade = pending_order()

    # when: the intermediate page is submitted with a blank reason
    response = _run_action(
        _admin_client(staff_operator), "reject_requests", [trade], apply="yes", reason="   "
    )

    # then
    assert response.status_code == 200
    assert any("a reason is required" in text.lower() for text in _messages(response))
    assert b"A reason is required to reject." in response.content
    assert _status(trade) == "pending_approval"
    trade.approval_request.refresh_from_db()
    assert trade.approval_request.status == "pending"


def test_reject_with_a_reason_releases_the_order(staff_operator, pending_order):
    # given
    trade = pending_order()
    agent = trade.agent
    agent.refresh_from_db()
    assert agent.reserved_cash > 0

    # when
    _run_action(
        _admin_client(staff_operator),
        "reject_requests",
        [trade],
        apply="yes",
        reason="position too concentrated",
    )

    # then
    assert _status(trade) == "rejected"
    agent.refresh_from_db()
    assert agent.reserved_cash == 0
    decision = trade.approval_request.decisions.get()
    assert decision.reason == "position too concentrated"


def test_bulk_approve_fills_three_trades(staff_operator, pending_order):
    # given: three requests needing one approval each
    trades = [pending_order() for _ in range(3)]

    # when
    response = _run_action(_admin_client(staff_operator), "approve_requests", trades)

    # then
    assert [_status(trade) for trade in trades] == ["filled"] * 3
    assert [text for text in _messages(response) if text.startswith("Approved: buy 150")] == [
        f"Approved: buy 150 AAPL for {trade.agent.name} (order filled)." for trade in trades
    ]


def test_an_oversight_outage_is_an_error_message_and_changes_nothing(
    staff_operator, pending_order, fresh_reference_services
):
    # given: the request is known to a service that then goes away
    trade = pending_order()
    fresh_reference_services.stop(grace=0)

    # when
    response = _run_action(_admin_client(staff_operator), "approve_requests", [trade])

    # then
    assert response.status_code == 200
    assert any("503" in text for text in _messages(response))
    assert _status(trade) == "pending_approval"
    assert not trade.approval_request.decisions.exists()


def test_trades_are_read_only_but_can_be_cancelled(staff_operator, pending_order):
    # given
    trade = pending_order()
    client = _admin_client(staff_operator)
    change_url = reverse("admin:trades_trade_change", args=[trade.pk])

    # when: the change form is posted with a new status
    client.post(change_url, {"status": "filled"})

    # then: unchanged (view-only); the cancel action goes through the service
    assert _status(trade) == "pending_approval"
    response = client.post(
        reverse("admin:trades_trade_changelist"),
        {"action": "cancel_trades", ACTION_CHECKBOX_NAME: [str(trade.pk)]},
        follow=True,
    )
    assert _status(trade) == "cancelled"
    trade.approval_request.refresh_from_db()
    assert trade.approval_request.status == "cancelled"
    assert any("Cancelled: 1" in text for text in _messages(response))


def test_terminate_action_uses_the_kill_switch(staff_operator, pending_order):
    # given: an agent with a pending order
    trade = pending_order()
    client = _admin_client(staff_operator)

    # when
    client.post(
        reverse("admin:agents_agent_changelist"),
        {"action": "terminate_agents", ACTION_CHECKBOX_NAME: [str(trade.agent_id)]},
        follow=True,
    )

    # then
    trade.agent.refresh_from_db()
    assert trade.agent.status == "terminated"
    assert _status(trade) == "cancelled"
    assert trade.agent.reserved_cash == 0


def test_every_admin_page_renders(staff_operator, pending_order):
    # given
    trade = pending_order()
    client = _admin_client(staff_operator)
    pages = [
        reverse("admin:index"),
        reverse(CHANGELIST) + "?status__exact=pending",
        reverse("admin:oversight_approvalrequest_change", args=[trade.approval_request.pk]),
        reverse("admin:agents_agent_changelist"),
        reverse("admin:agents_agent_change", args=[trade.agent_id]),
        reverse("admin:trades_trade_changelist") + "?status__exact=pending_approval",
        reverse("admin:trades_trade_change", args=[trade.pk]),
        reverse("admin:metering_usageevent_changelist") + "?delivery_state__exact=pending",
        reverse("admin:realtime_agenteventbatch_changelist"),
        reverse(
            "admin:realtime_agenteventbatch_change",
            args=[AgentEventBatch.objects.filter(agent_id=trade.agent_id).first().pk],
        ),
        reverse("admin:trades_marketprice_changelist"),
        reverse("admin:agents_position_changelist"),
        reverse("admin:agents_portfoliosnapshot_changelist"),
        reverse("admin:trades_fill_changelist"),
        reverse("admin:trades_idempotencyrecord_changelist"),
        reverse("admin:oversight_approvaldecision_changelist"),
    ]

    # then
    for url in pages:
        assert client.get(url).status_code == 200, url
    assert client.get(reverse("admin:agents_agent_add")).status_code == 403


# --- the request's own page ---------------------------------------------------------------


def _change_url(trade) -> str:
    return reverse("admin:oversight_approvalrequest_change", args=[trade.approval_request.pk])


def _decide(client: Client, trade, **data):
    url = reverse("admin:oversight_approvalrequest_decide", args=[trade.approval_request.pk])
    return client.post(url, data, follow=True)


def test_the_request_page_has_approve_and_reject_and_reads_as_words(staff_operator, pending_order):
    # given
    trade = pending_order()
    client = _admin_client(staff_operator)

    # when
    page = client.get(_change_url(trade)).content.decode()

    # then: the decision buttons, the reason field, the agent's name linked, the order in words
    assert 'value="Approve"' in page and 'value="Reject"' in page
    assert 'name="reason"' in page and "required" in page
    agent_url = reverse("admin:agents_agent_change", args=[trade.agent_id])
    assert f'<a href="{agent_url}">{trade.agent.name}</a>' in page
    assert "buy 150 AAPL (pending_approval)" in page
    # risk factors as a table, not JSON
    assert '<table class="risk-factors">' in page
    assert "notional vs budget" in page
    assert '"factor":' not in page


def test_approve_on_the_request_page_fills_and_says_what_was_decided(staff_operator, pending_order):
    trade = pending_order()
    client = _admin_client(staff_operator)

    response = _decide(client, trade, decision="approve")

    assert response.status_code == 200
    assert _status(trade) == "filled"
    assert _messages(response) == [f"Approved: buy 150 AAPL for {trade.agent.name} (order filled)."]
    # the page no longer offers a decision, and the history names the approver
    page = response.content.decode()
    assert 'value="Approve"' not in page
    assert "approved by desk-operator" in page


def test_reject_on_the_request_page_needs_a_reason(staff_operator, pending_order):
    trade = pending_order()
    client = _admin_client(staff_operator)

    refused = _decide(client, trade, decision="reject", reason="  ")
    assert _status(trade) == "pending_approval"
    assert "a reason is required" in " ".join(_messages(refused)).lower()

    response = _decide(client, trade, decision="reject", reason="too concentrated")
    assert _status(trade) == "rejected"
    assert _messages(response) == [
        f"Rejected: buy 150 AAPL for {trade.agent.name} (reason: too concentrated)."
    ]


def test_the_request_page_keeps_the_self_approval_rule(user_factory, pending_order):
    # given: a staff operator who owns the agent
    owner = user_factory(username="owner-operator", operator=True, staff=True)
    trade = pending_order(user=owner)

    response = _decide(_admin_client(owner), trade, decision="approve")

    assert _status(trade) == "pending_approval"
    assert any("Self-Approval" in text and "403" in text for text in _messages(response))


def test_the_queue_shows_agent_names_not_ids(staff_operator, pending_order):
    trade = pending_order()

    page = _admin_client(staff_operator).get(reverse(CHANGELIST)).content.decode()

    # the name, linked; the id only inside the link's address
    assert f">{trade.agent.name}</a></td>" in page
    assert f">{trade.agent_id}" not in page
    assert f"({trade.agent_id})" not in page
