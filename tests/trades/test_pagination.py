"""Pages of a list: a short first page is its own count; everything else as Django counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.helpers import place_buys, trades_url
from trades.models import Trade


def counts(queries) -> int:
    return sum(1 for q in queries.captured_queries if "COUNT(" in q["sql"].upper())


@pytest.fixture
def five_orders(owner_client, agent):
    place_buys(owner_client, agent, 5)
    return agent


def test_a_short_first_page_answers_its_count_without_counting(owner_client, five_orders):
    with CaptureQueriesContext(connection) as queries:
        page = owner_client.get(trades_url(five_orders), {"page_size": 10}).json()
    assert (page["count"], len(page["results"]), page["next"], page["previous"]) == (
        5,
        5,
        None,
        None,
    )
    assert counts(queries) == 0


@pytest.mark.parametrize(
    ("query", "count", "results", "has_next", "has_previous"),
    [
        ({"page_size": 5}, 5, 5, False, False),  # full first page: counted, no next page
        ({"page_size": 2}, 5, 2, True, False),
        ({"page_size": 2, "page": 2}, 5, 2, True, True),
        ({"page_size": 2, "page": 3}, 5, 1, False, True),
        ({"page_size": 2, "page": "last"}, 5, 1, False, True),
    ],
)
def test_other_pages_are_counted(
    owner_client, five_orders, query, count, results, has_next, has_previous
):
    with CaptureQueriesContext(connection) as queries:
        page = owner_client.get(trades_url(five_orders), query).json()
    assert page["count"] == count
    assert len(page["results"]) == results
    assert (page["next"] is not None, page["previous"] is not None) == (has_next, has_previous)
    assert counts(queries) == 1


def test_an_empty_list_and_pages_past_the_end(owner_client, agent, five_orders):
    empty = owner_client.get(trades_url(agent), {"status": "cancelled"})
    assert (empty.json()["count"], empty.json()["results"]) == (0, [])
    for page in (4, 0, "one", "1.5"):
        answer = owner_client.get(trades_url(five_orders), {"page_size": 2, "page": page})
        assert answer.status_code == 404, page


def test_orders_placed_at_the_same_instant_appear_once_each_across_pages(owner_client, five_orders):
    # Five orders with one creation time: only the id orders them, and every page must use
    # the same order, or walking the pages repeats some orders and never shows others.
    Trade.objects.filter(agent_id=five_orders.pk).update(created_at=timezone.now())
    by_id = sorted(Trade.objects.filter(agent_id=five_orders.pk).values_list("pk", flat=True))
    seen = []
    for number in (1, 2, 3):
        page = owner_client.get(trades_url(five_orders), {"page_size": 2, "page": number})
        seen += [order["id"] for order in page.json()["results"]]
    assert seen == [str(pk) for pk in reversed(by_id)]


def test_orders_equal_on_the_chosen_ordering_appear_once_each_across_pages(
    owner_client, five_orders
):
    # Five orders of one symbol: ``?ordering=symbol`` leaves them tied, the id orders them.
    by_id = sorted(Trade.objects.filter(agent_id=five_orders.pk).values_list("pk", flat=True))
    seen = []
    for number in (1, 2, 3):
        query = {"ordering": "symbol", "page_size": 2, "page": number}
        seen += [
            order["id"]
            for order in owner_client.get(trades_url(five_orders), query).json()["results"]
        ]
    assert seen == [str(pk) for pk in reversed(by_id)]
