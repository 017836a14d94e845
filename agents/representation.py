"""The Agent and portfolio documents of SPEC §5, each built in one place for the REST API and
the live events.

``AgentSerializer`` is the Agent JSON of the API and of ``agent.terminated``.
``PortfolioSerializer`` (the REST API) answers what ``portfolio_representation`` builds, and the
``portfolio.update`` live event publishes it too. Values are formatted as DRF's
``DecimalField`` and ``DateTimeField`` format them (``api.representation``); a test holds the
serializer's declared fields equal to it.
"""

from __future__ import annotations

from rest_framework import serializers

from agents.models import Agent
from api.representation import datetime_text, decimal_text

MONEY_PLACES = 2
QUANTITY_PLACES = 6


class AgentSerializer(serializers.ModelSerializer):
    """The Agent JSON of SPEC §5. ``owner`` is the owner's username (select_related it)."""

    owner = serializers.CharField(source="owner.username", read_only=True)
    available_cash = serializers.DecimalField(
        max_digits=20, decimal_places=MONEY_PLACES, read_only=True
    )
    config = serializers.JSONField(source="effective_config", read_only=True)

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "owner",
            "status",
            "strategy",
            "risk_tolerance",
            "budget",
            "cash_balance",
            "reserved_cash",
            "available_cash",
            "realized_pnl",
            "config",
            "created_at",
            "updated_at",
            "last_active_at",
        ]
        read_only_fields = fields


_MONEY_FIELDS = (
    "cash_balance",
    "reserved_cash",
    "available_cash",
    "positions_value",
    "total_value",
    "realized_pnl",
    "unrealized_pnl",
)


def _position_json(row: dict) -> dict:
    money = MONEY_PLACES
    return {
        "symbol": str(row["symbol"]),
        "quantity": decimal_text(row["quantity"], QUANTITY_PLACES),
        "reserved_quantity": decimal_text(row["reserved_quantity"], QUANTITY_PLACES),
        "avg_price": decimal_text(row["avg_price"], money),
        "cost_basis": decimal_text(row["cost_basis"], money),
        "current_price": decimal_text(row["current_price"], money),
        "market_value": decimal_text(row["market_value"], money),
        "unrealized_pnl": decimal_text(row["unrealized_pnl"], money),
    }


def portfolio_representation(valuation: dict) -> dict:
    """The portfolio document of SPEC §5 of a valuation (``agents.selectors``)."""
    document = {"agent_id": str(valuation["agent_id"])}
    for name in _MONEY_FIELDS:
        document[name] = decimal_text(valuation[name], MONEY_PLACES)
    document["positions"] = [_position_json(row) for row in valuation["positions"]]
    document["updated_at"] = datetime_text(valuation["updated_at"])
    return document
