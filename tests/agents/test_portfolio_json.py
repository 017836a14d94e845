"""The portfolio document is one document: ``portfolio_representation`` (which the serializer and
the ``portfolio.update`` event use) answers exactly what ``PortfolioSerializer``'s fields do."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from agents.api.serializers import PortfolioSerializer
from agents.representation import portfolio_representation as portfolio_json
from tests.helpers import agent_url, trades_url
from trades import market
from trades.selectors import portfolio_for


def drf_json(valuation: dict) -> dict:
    """What the serializer's declared fields produce (DRF's own field-by-field path)."""
    return serializers.Serializer.to_representation(PortfolioSerializer(), valuation)


def test_a_traded_portfolio_serializes_as_drf_does(owner_client, agent_factory):
    # given an agent holding two positions bought at odd prices, one partly reserved by a sale
    market.set_price("AAPL", "189.99")
    market.set_price("MSFT", "333.33")
    agent = agent_factory(budget="100000")
    base = trades_url(agent)
    for body in (
        {"symbol": "AAPL", "side": "buy", "quantity": "3.5"},
        {"symbol": "MSFT", "side": "buy", "quantity": "7"},
        {"symbol": "MSFT", "side": "sell", "type": "limit", "limit_price": "999", "quantity": "2"},
    ):
        assert owner_client.post(base, body, format="json").status_code == 201
    market.set_price("AAPL", "201.07")

    # then the portfolio serializes the same both ways, and the API answers that document
    valuation = portfolio_for(agent)
    assert len(valuation["positions"]) == 2
    assert portfolio_json(valuation) == drf_json(valuation)
    answered = owner_client.get(agent_url(agent, "/portfolio")).json()
    assert answered.keys() == drf_json(valuation).keys()
    assert answered["positions"] == drf_json(valuation)["positions"]


amounts = st.decimals(
    min_value=Decimal("-99999999"), max_value=Decimal("99999999"), places=8, allow_nan=False
)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(amounts, min_size=13, max_size=13), symbols=st.integers(0, 3))
@pytest.mark.django_db
def test_amounts_round_as_drf_does(values, symbols):
    # given a valuation with arbitrary amounts (halfway cases included) and 0-3 positions
    money_fields = [
        name
        for name, field in PortfolioSerializer().fields.items()
        if isinstance(field, serializers.DecimalField)
    ]
    assert len(money_fields) == 7
    money = dict(zip(money_fields, values, strict=False))
    position = dict(
        zip(
            ("quantity", "reserved_quantity", "avg_price", "cost_basis", "current_price"),
            values[7:],
            strict=False,
        ),
        market_value=values[12],
        unrealized_pnl=values[0],
    )
    valuation = {
        "agent_id": "00000000-0000-0000-0000-000000000001",
        **money,
        "positions": [{"symbol": s, **position} for s in ["AAPL", "MSFT", "TSLA"][:symbols]],
        "updated_at": datetime(2026, 11, 25, 12, 30, 1, 123456, tzinfo=UTC),
    }
    # then both ways give the same JSON
    assert portfolio_json(valuation) == drf_json(valuation)
