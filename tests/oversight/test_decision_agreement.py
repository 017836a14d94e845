"""A decision the oversight service accepted is recorded here too: both places or neither.

The local step is made to fail after the service accepted the decision, for a real reason: a
database trigger refuses the rows it writes (a fill, or the decision itself), as a constraint
or a broken table would. The reference oversight service is real; its ``GetRequestStatus``
and the server's ``ApprovalRequest``/``Trade`` rows must agree afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import connection

from grpc_clients.registry import get_oversight_client
from oversight.models import ApprovalDecision, ApprovalRequest
from tests.helpers import approve_url
from trades.models import Fill, Trade

pytestmark = pytest.mark.django_db


@contextmanager
def inserts_refused(model):
    """A trigger that makes every INSERT into ``model``'s table fail, until the block ends."""
    table = model._meta.db_table
    trigger = f"refuse_{table}"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'inserts refused by a test trigger'; END $$"
            )
            cursor.execute(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'inserts refused by a test trigger'); END"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER {trigger} ON {table}")
                cursor.execute("DROP FUNCTION refuse_insert()")
            else:
                cursor.execute(f"DROP TRIGGER {trigger}")


@pytest.fixture
def operator_api(client_for, operator):
    api = client_for(operator)
    api.raise_request_exception = False  # a 500 is an answer here, not a test error
    return api


def test_an_approval_whose_execution_fails_is_approved_here_as_on_the_oversight_service(
    pending_request, operator_api
):
    # given: a held 20,000 buy
    agent, trade = pending_request()
    request_id = trade["approval_request_id"]

    # when: the operator approves, and the fill cannot be written
    with inserts_refused(Fill):
        response = operator_api.post(approve_url(request_id))

    # then: approved on both sides; the trade is rejected with its reservation given back
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "approved"
    assert get_oversight_client().get_request_status(request_id).state == "approved"
    assert ApprovalRequest.objects.get(pk=request_id).status == "approved"
    rejected = Trade.objects.get(pk=trade["id"])
    assert rejected.status == "rejected"
    assert "could not be executed" in rejected.rejection_reason
    agent.refresh_from_db()
    assert (agent.cash_balance, agent.reserved_cash) == (Decimal("100000.00"), Decimal("0"))
    assert not agent.positions.exists()


def test_an_approval_that_could_not_be_recorded_is_taken_from_the_oversight_service(
    pending_request, operator_api, client_for, second_operator
):
    # given: the service accepted an approval whose local record failed (the decision row
    # refused), so the server answered 500
    agent, trade = pending_request()
    request_id = trade["approval_request_id"]
    with inserts_refused(ApprovalDecision):
        failed = operator_api.post(approve_url(request_id))
    assert failed.status_code == 500
    assert get_oversight_client().get_request_status(request_id).state == "approved"

    # when: the next decisions on the request arrive (the operator retries, another operator
    # rejects)
    retry = operator_api.post(approve_url(request_id))
    rejection = client_for(second_operator).post(
        f"/api/v1/oversight/requests/{request_id}/reject", {"reason": "no"}, format="json"
    )

    # then: the server followed the service — approved, executed — and the retry is answered
    # as the approval it is; the late rejection is refused as on the service
    assert retry.status_code == 200, retry.content
    assert retry.json()["status"] == "approved"
    assert rejection.status_code == 409, rejection.content
    approval = ApprovalRequest.objects.get(pk=request_id)
    assert approval.status == "approved"
    assert list(approval.decisions.values_list("decision", flat=True)) == ["approved"]
    assert get_oversight_client().get_request_status(request_id).state == "approved"
    assert Trade.objects.get(pk=trade["id"]).status == "filled"
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("80000.00")
    assert agent.reserved_cash == Decimal("0")


def test_a_decision_refused_by_the_service_brings_a_stale_request_in_line(
    pending_request, operator_api, client_for, second_operator
):
    # given: the service approved the request but the server's record of it failed
    _agent, trade = pending_request()
    request_id = trade["approval_request_id"]
    with inserts_refused(ApprovalDecision):
        assert operator_api.post(approve_url(request_id)).status_code == 500

    # when: another operator rejects it
    rejection = client_for(second_operator).post(
        f"/api/v1/oversight/requests/{request_id}/reject", {"reason": "no"}, format="json"
    )

    # then: refused as on the service, and the server now says what the service says
    assert rejection.status_code == 409, rejection.content
    assert ApprovalRequest.objects.get(pk=request_id).status == "approved"
    assert Trade.objects.get(pk=trade["id"]).status == "filled"
