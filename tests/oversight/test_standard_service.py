"""Against an oversight service with only Creto's standard rpcs (no ``CancelRequest``).

The reference service runs with ``oversight_extensions=False``: ``CancelRequest`` answers
UNIMPLEMENTED, as a service built from Creto's proto does. A request the server drops must not
stay pending there.
"""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from grpc_clients.registry import get_oversight_client, reset_clients
from oversight.models import ApprovalRequest
from reference_services.server import start_reference_services
from tests.helpers import agent_url, trades_url
from trades.models import Trade

pytestmark = pytest.mark.django_db


@pytest.fixture
def standard_oversight(reference_services):
    """A reference oversight service serving only the standard Creto rpcs, for this test."""
    services = start_reference_services(metering_address=None, oversight_extensions=False)
    django_settings.OVERSIGHT_GRPC_ADDRESS = services.oversight_address
    reset_clients()
    yield services
    services.stop(grace=0)
    django_settings.OVERSIGHT_GRPC_ADDRESS = reference_services.oversight_address
    reset_clients()


def test_the_standard_service_answers_cancel_unimplemented(standard_oversight):
    from grpc_clients.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable) as raised:
        get_oversight_client().cancel(request_id="any", actor_id="x", reason="y")
    assert raised.value.code == "UNIMPLEMENTED"


def test_cancelling_a_held_order_closes_its_request_on_a_standard_oversight_service(
    standard_oversight, pending_request, owner_client, django_capture_on_commit_callbacks
):
    # given
    agent, trade = pending_request()
    request_id = trade["approval_request_id"]
    assert get_oversight_client().get_request_status(request_id).state == "pending"

    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.delete(trades_url(agent, trade["id"]))

    # then: cancelled here, closed there, with the cancellation named as the reason
    assert response.status_code == 200, response.content
    assert ApprovalRequest.objects.get(pk=request_id).status == "cancelled"
    remote = get_oversight_client().get_request_status(request_id)
    assert remote.state == "rejected"
    assert remote.decision.justification.startswith("cancelled:")
    assert "trade cancelled" in remote.decision.justification


def test_terminating_an_agent_closes_its_pending_requests_on_a_standard_oversight_service(
    standard_oversight, pending_request, operator, client_for, django_capture_on_commit_callbacks
):
    # given: two held orders
    agent, first = pending_request(budget="200000")
    second = client_for(agent.owner).post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "150"},
        format="json",
    )
    assert second.status_code == 202, second.content
    request_ids = [first["approval_request_id"], second.json()["approval_request_id"]]

    # when: the operator's kill switch
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(operator).delete(agent_url(agent))

    # then: no request the server dropped stays pending on the service
    assert response.status_code in (200, 204), response.content
    assert set(Trade.objects.filter(agent=agent).values_list("status", flat=True)) == {"cancelled"}
    for request_id in request_ids:
        remote = get_oversight_client().get_request_status(request_id)
        assert remote.state == "rejected", request_id
        assert "agent terminated" in remote.decision.justification
