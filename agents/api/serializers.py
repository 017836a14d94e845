"""JSON of agents and portfolios (SPEC §5), and the input of the agent routes."""

from __future__ import annotations

from decimal import Decimal

from rest_framework import serializers

from agents.choices import AgentStatus, Strategy
from agents.representation import AgentSerializer, portfolio_representation
from api.serializers import StrictInputSerializer

MONEY = {"max_digits": 20, "decimal_places": 2}
QUANTITY = {"max_digits": 20, "decimal_places": 6}


class AgentCreateSerializer(StrictInputSerializer):
    """Body of ``POST /agents``: types and ranges; the service normalises ``config``."""

    read_only_names = tuple(AgentSerializer.Meta.fields)

    name = serializers.CharField(max_length=100)
    budget = serializers.DecimalField(
        **MONEY, min_value=Decimal("1000"), max_value=Decimal("1000000")
    )
    strategy = serializers.ChoiceField(choices=Strategy.choices, default=Strategy.CUSTOM)
    risk_tolerance = serializers.IntegerField(min_value=0, max_value=10, default=5)
    config = serializers.JSONField(required=False, default=None)


class AgentUpdateSerializer(StrictInputSerializer):
    """Body of ``PATCH /agents/{id}``: only these fields; any other is a 400 naming it."""

    read_only_names = tuple(AgentSerializer.Meta.fields)

    name = serializers.CharField(max_length=100, required=False)
    status = serializers.ChoiceField(choices=AgentStatus.choices, required=False)
    config = serializers.JSONField(required=False)


class PositionSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    quantity = serializers.DecimalField(**QUANTITY)
    reserved_quantity = serializers.DecimalField(**QUANTITY)
    # Every price in the API has the market's two decimals; the cost basis keeps the exact total.
    avg_price = serializers.DecimalField(**MONEY)
    cost_basis = serializers.DecimalField(**MONEY)
    current_price = serializers.DecimalField(**MONEY)
    market_value = serializers.DecimalField(**MONEY)
    unrealized_pnl = serializers.DecimalField(**MONEY)


class PortfolioSerializer(serializers.Serializer):
    """The portfolio document of SPEC §5 (from ``trades.selectors.portfolio_for``)."""

    agent_id = serializers.UUIDField()
    cash_balance = serializers.DecimalField(**MONEY)
    reserved_cash = serializers.DecimalField(**MONEY)
    available_cash = serializers.DecimalField(**MONEY)
    positions_value = serializers.DecimalField(**MONEY)
    total_value = serializers.DecimalField(**MONEY)
    realized_pnl = serializers.DecimalField(**MONEY)
    unrealized_pnl = serializers.DecimalField(**MONEY)
    positions = PositionSerializer(many=True)
    updated_at = serializers.DateTimeField()

    def to_representation(self, instance: dict) -> dict:
        # The fields above describe the shape (OpenAPI) and format as
        # portfolio_representation does (tests/agents/test_portfolio_json.py).
        return portfolio_representation(instance)


class PortfolioPointSerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    total_value = serializers.DecimalField(**MONEY)
    cash_balance = serializers.DecimalField(**MONEY)


class HistoryQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=365, default=30)
