"""Orders carry only numbers every supported database stores exactly (``api.bounds``).

A price of ``9999999999999999.99`` was accepted; SQLite stored it as an integer its field then
could not read, and every page listing that order answered 500. Prices, quantities and
notionals past the bounds are refused with 400 ``validation-error`` naming the field and the
bound; at the bound, an order is stored and read back unchanged.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.models import Position
from tests.helpers import submit, trades_url
from trades import market


def assert_refused(response, field: str, bound: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["type"].rstrip("/").endswith("validation-error")
    assert any(bound in message for message in body["errors"][field]), body


@pytest.mark.parametrize(
    ("order", "field", "bound"),
    [
        ({"type": "limit", "limit_price": "9999999999999999.99"}, "limit_price", "1000000000"),
        ({"type": "limit", "limit_price": "1000000000.01"}, "limit_price", "1000000000"),
        ({"type": "stop", "stop_price": "9999999999999999.99"}, "stop_price", "1000000000"),
        (
            {"type": "stop_limit", "stop_price": "1000000000.01", "limit_price": "100"},
            "stop_price",
            "1000000000",
        ),
        ({"quantity": "1000000000.000001"}, "quantity", "1000000000"),
        ({"quantity": "99999999999999.999999"}, "quantity", "1000000000"),
    ],
)
def test_prices_and_quantities_no_database_stores_exactly_are_refused_naming_the_bound(
    owner_client, agent, order, field, bound
):
    # when
    response = submit(
        owner_client, agent, **{"symbol": "AAPL", "side": "buy", "quantity": "1", **order}
    )

    # then: refused, and the owner's orders still list
    assert_refused(response, field, bound)
    assert owner_client.get(trades_url(agent)).status_code == 200


@pytest.mark.parametrize(
    ("order", "price"),
    [
        ({"type": "limit", "limit_price": "999999999", "quantity": "2000", "side": "sell"}, None),
        ({"quantity": "999999999", "side": "buy"}, "5000.00"),
    ],
)
def test_an_order_whose_notional_no_database_stores_exactly_is_refused_naming_the_bound(
    owner_client, agent, order, price
):
    # given
    if price is not None:
        market.set_price("AAPL", price)

    # when
    response = submit(owner_client, agent, symbol="AAPL", **order)

    # then
    assert_refused(response, "quantity", "1000000000000")


def test_an_order_at_the_bounds_is_stored_and_read_back_exactly(owner_client, agent):
    # given: shares to sell
    Position.objects.create(
        agent=agent, symbol="AAPL", quantity=Decimal("999"), cost_basis=Decimal("0")
    )

    # when: a resting sell at the highest price, a resting buy stop at the highest stop
    sell = submit(
        owner_client, agent, symbol="AAPL", side="sell", quantity="999", type="limit",
        limit_price="1000000000.00", time_in_force="gtc",
    )  # fmt: skip
    stop = submit(
        owner_client, agent, symbol="MSFT", side="buy", quantity="1", type="stop",
        stop_price="1000000000.00", time_in_force="gtc",
    )  # fmt: skip

    # then: both are kept (the sell waits for an operator), and read back as sent
    assert sell.status_code == 202, sell.content
    assert stop.status_code == 201, stop.content
    listed = {t["id"]: t for t in owner_client.get(trades_url(agent)).json()["results"]}
    assert listed[sell.json()["id"]]["limit_price"] == "1000000000.00"
    assert listed[sell.json()["id"]]["notional"] == "999000000000.00"
    assert listed[stop.json()["id"]]["stop_price"] == "1000000000.00"
