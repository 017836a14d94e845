"""Listing approval requests: who sees what, filters, order, pagination, query counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db

LIST = "/api/v1/oversight/requests"


@pytest.fixture
def requests_of_two_owners(pending_request, other_owner, operator, client_for):
    """Three requests of `owner` (two agents, one decided) and one of `other_owner`."""
    first_agent, first = pending_request()
    _, second = pending_request()
    _, third = pending_request()
    # same agent as the first: decided once, so its JSON carries a decision
    client_for(operator).post(f"{LIST}/{third['approval_request_id']}/approve")
    foreign_agent, foreign = pending_request(user=other_owner)
    return {
        "first_agent": first_agent,
        "owner_ids": [first, second, third],
        "foreign": foreign,
        "foreign_agent": foreign_agent,
    }


def _ids(response) -> list[str]:
    return [item["id"] for item in response.json()["results"]]


def test_owners_see_their_agents_requests_and_operators_see_all(
    requests_of_two_owners, owner_client, operator, client_for
):
    owned = [t["approval_request_id"] for t in requests_of_two_owners["owner_ids"]]
    foreign = requests_of_two_owners["foreign"]["approval_request_id"]

    as_owner = owner_client.get(LIST)
    as_operator = client_for(operator).get(LIST)

    assert as_owner.status_code == 200
    assert as_owner.json()["count"] == 3
    # newest first
    assert _ids(as_owner) == list(reversed(owned))
    assert as_operator.json()["count"] == 4
    assert _ids(as_operator) == [foreign, *reversed(owned)]
    assert owner_client.get(f"{LIST}/{foreign}").status_code == 404


def test_filters_by_status_and_agent(requests_of_two_owners, owner_client, operator, client_for):
    decided = requests_of_two_owners["owner_ids"][2]["approval_request_id"]
    agent = requests_of_two_owners["first_agent"]

    approved = owner_client.get(LIST, {"status": "approved"})
    pending = owner_client.get(LIST, {"status": "pending"})
    by_agent = owner_client.get(LIST, {"agent_id": str(agent.pk)})
    foreign_agent = requests_of_two_owners["foreign_agent"]
    foreign_by_owner = owner_client.get(LIST, {"agent_id": str(foreign_agent.pk)})

    assert _ids(approved) == [decided]
    assert pending.json()["count"] == 2
    assert by_agent.json()["count"] == 1
    assert foreign_by_owner.json()["count"] == 0
    assert client_for(operator).get(LIST, {"agent_id": str(foreign_agent.pk)}).json()["count"] == 1
    assert owner_client.get(LIST, {"status": "maybe"}).status_code == 400


def test_pagination(requests_of_two_owners, operator, client_for):
    page = client_for(operator).get(LIST, {"page_size": 3})
    assert page.json()["count"] == 4
    assert len(page.json()["results"]) == 3
    assert page.json()["next"] is not None
    assert page.json()["previous"] is None
    second = client_for(operator).get(LIST, {"page_size": 3, "page": 2})
    assert len(second.json()["results"]) == 1


def test_the_list_costs_the_same_queries_for_any_number_of_requests(
    token_cache, pending_request, operator, client_for
):
    api = client_for(operator)
    pending_request()
    assert api.get(LIST).status_code == 200  # the operator's token is now cached

    with CaptureQueriesContext(connection) as one:
        assert api.get(LIST).status_code == 200
    for _ in range(4):
        _, trade = pending_request()
        api.post(f"{LIST}/{trade['approval_request_id']}/approve")
    with CaptureQueriesContext(connection) as five:
        response = api.get(LIST)

    assert response.json()["count"] == 5
    assert sum(len(item["decisions"]) for item in response.json()["results"]) == 4
    # operator group, page (a short first page is its own count), decisions with their
    # approvers
    assert len(one) == len(five) == 3
