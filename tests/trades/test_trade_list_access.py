"""Who may list an agent's orders: the owner's page is read with the ownership in the same
statement; every other answer is exactly the agent routes' 404 or an operator's full list."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from metering.models import UsageEvent
from tests.helpers import assert_problem, place_buys, trades_url

MISSING = "00000000-0000-4000-8000-000000000000"
NO_SUCH_PAGE = "The requested resource was not found."  # a page past the end of a visible list


def statements(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].split()[0].upper()
        not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")
    ]


def no_such_agent(response) -> dict:
    """The 404 of an agent route for an agent the caller may not see, without its URL."""
    body = assert_problem(response, 404, "not-found")
    assert body["detail"] == "No such agent."
    assert response["Content-Type"].startswith("application/problem+json")
    return {key: value for key, value in body.items() if key != "instance"}


@pytest.fixture
def seven_orders(owner_client, agent):
    place_buys(owner_client, agent, 7)
    return agent


@pytest.fixture
def missing_body(owner_client):
    return no_such_agent(owner_client.get(f"/api/v1/agents/{MISSING}/trades"))


def test_the_owners_full_page_is_three_statements(token_cache, owner_client, seven_orders):
    # the page with the agent's owner, the count, the api_calls row (the token is cached)
    with CaptureQueriesContext(connection) as queries:
        page = owner_client.get(trades_url(seven_orders), {"page_size": 5}).json()
    assert (page["count"], len(page["results"])) == (7, 5)
    sent = statements(queries)
    assert len(sent) == 3, sent
    assert not any('FROM "agents_agent"' in sql for sql in sent), sent


def test_the_owners_short_page_is_two_statements(token_cache, owner_client, seven_orders):
    # the page with the agent's owner (its own count), the api_calls row (the token is cached)
    with CaptureQueriesContext(connection) as queries:
        page = owner_client.get(trades_url(seven_orders)).json()
    assert (page["count"], len(page["results"])) == (7, 7)
    assert len(statements(queries)) == 2, statements(queries)


def test_without_the_token_cache_a_page_also_reads_the_token(settings, owner_client, seven_orders):
    settings.API_TOKEN_CACHE_SECONDS = 0
    with CaptureQueriesContext(connection) as queries:
        owner_client.get(trades_url(seven_orders))
    sent = statements(queries)
    assert len(sent) == 3, sent
    assert 'FROM "authtoken_token"' in sent[0], sent


@pytest.mark.parametrize(
    "query",
    [{}, {"page_size": 5}, {"page": 2, "page_size": 5}, {"page": 9}, {"page": "x"}, {"side": "up"}],
)
def test_another_owners_agent_with_orders_is_no_such_agent(
    client_for, other_owner, seven_orders, missing_body, query
):
    response = client_for(other_owner).get(trades_url(seven_orders), query)
    assert no_such_agent(response) == missing_body


@pytest.mark.parametrize("query", [{}, {"page": 2}, {"page": "x"}, {"status": "bogus"}])
def test_another_owners_empty_agent_and_a_missing_one_are_no_such_agent(
    owner_client, client_for, other_owner, agent_factory, missing_body, query
):
    theirs = agent_factory(user=other_owner)
    assert no_such_agent(owner_client.get(trades_url(theirs), query)) == missing_body
    url = f"/api/v1/agents/{MISSING}/trades"
    assert no_such_agent(owner_client.get(url, query)) == missing_body


def test_the_owners_empty_list_and_refusals_stand(owner_client, agent, seven_orders):
    empty = owner_client.get(trades_url(agent), {"status": "cancelled"})
    assert (empty.status_code, empty.json()["count"], empty.json()["results"]) == (200, 0, [])
    past_the_end = owner_client.get(trades_url(seven_orders), {"page": 9})
    assert assert_problem(past_the_end, 404, "not-found")["detail"] == NO_SUCH_PAGE
    assert owner_client.get(trades_url(seven_orders), {"side": "up"}).status_code == 400


def test_the_owners_agent_without_orders_is_an_empty_list(owner_client, agent_factory):
    empty = owner_client.get(trades_url(agent_factory()))
    assert (empty.status_code, empty.json()["count"], empty.json()["results"]) == (200, 0, [])


@pytest.mark.parametrize("kind", ["group", "staff"])
def test_operators_list_another_owners_orders(client_for, user_factory, seven_orders, kind):
    operator = user_factory(operator=kind == "group", staff=kind == "staff")
    client = client_for(operator)
    first = client.get(trades_url(seven_orders), {"page_size": 5}).json()
    second = client.get(trades_url(seven_orders), {"page_size": 5, "page": 2}).json()
    assert (first["count"], len(first["results"]), second["count"], len(second["results"])) == (
        7,
        5,
        7,
        2,
    )
    mine = {
        o["id"]
        for o in client_for(seven_orders.owner).get(trades_url(seven_orders)).json()["results"]
    }
    assert {o["id"] for o in first["results"] + second["results"]} == mine
    filtered = client.get(trades_url(seven_orders), {"status": "cancelled"}).json()
    assert filtered["count"] == 0
    assert client.get(trades_url(seven_orders), {"page": 9}).json()["detail"] == NO_SUCH_PAGE
    assert client.get(trades_url(seven_orders), {"side": "up"}).status_code == 400
    assert no_such_agent(client.get(f"/api/v1/agents/{uuid.uuid4()}/trades"))


def test_only_reads_of_a_visible_agent_count_an_api_call(
    owner_client, client_for, other_owner, operator, seven_orders, agent_factory
):
    api_calls = UsageEvent.objects.filter(code="api_calls")
    before = api_calls.count()  # the orders' own
    stranger = client_for(other_owner)
    assert stranger.get(trades_url(seven_orders)).status_code == 404
    assert stranger.get(trades_url(seven_orders), {"page": 2}).status_code == 404
    assert owner_client.get(trades_url(agent_factory(user=other_owner))).status_code == 404
    assert owner_client.get(f"/api/v1/agents/{MISSING}/trades").status_code == 404
    assert api_calls.count() == before

    assert owner_client.get(trades_url(seven_orders)).status_code == 200
    assert client_for(operator).get(trades_url(seven_orders)).status_code == 200
    assert api_calls.filter(agent=seven_orders).count() - before == 2
    assert api_calls.count() - before == 2
