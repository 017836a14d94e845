"""The portfolio document of SPEC §5, built in one place.

``PortfolioSerializer`` (the REST API) answers what ``portfolio_representation`` builds, and the
``portfolio.update`` live event publishes it too. Values are formatted as DRF's
``DecimalField`` and ``DateTimeField`` format them (``config.representation``); a test holds the
serializer's declared fields equal to it.
"""

from __future__ import annotations

from config.representation import datetime_text, decimal_text

MONEY_PLACES = 2
QUANTITY_PLACES = 6

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
