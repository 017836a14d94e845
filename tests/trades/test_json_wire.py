"""An order, a page of orders and a problem answer are DRF's ``JSONRenderer`` bytes on the wire."""

from __future__ import annotations

import pytest
from rest_framework.renderers import JSONRenderer

from tests.helpers import submit, trades_url


@pytest.mark.django_db
def test_an_order_and_a_problem_answer_drf_s_bytes(owner_client, agent):
    # an order's answer (a document with decimals and datetimes as the API writes them)
    order = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="2")
    assert order.status_code == 201
    assert order.content == JSONRenderer().render(order.data)
    # a page of orders
    page = owner_client.get(trades_url(agent))
    assert page.status_code == 200
    assert page.content == JSONRenderer().render(page.data)
    # and a problem+json answer
    refused = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="-1")
    assert refused.status_code == 400
    assert refused["Content-Type"].startswith("application/problem+json")
    assert refused.content == JSONRenderer().render(refused.data)
