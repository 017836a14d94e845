"""Rule 1 of SPEC §5: the shape of an order, before anything is locked or reserved."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from rest_framework import serializers

from api.bounds import MAX_PRICE, MAX_QUANTITY
from api.serializers import StrictInputSerializer
from trades import market
from trades.choices import OrderType, Side, TimeInForce

# Bounded to what every supported database stores exactly (api.bounds).
PRICE = {"max_digits": 18, "decimal_places": 2, "max_value": MAX_PRICE}
LIMIT_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT)
STOP_TYPES = (OrderType.STOP, OrderType.STOP_LIMIT)


def symbol_normalised(value: str) -> str:
    """A symbol as an order names it (``OrderInputSerializer``): trimmed, upper case."""
    return value.strip().upper()


class OrderMetadataSerializer(StrictInputSerializer):
    strategy = serializers.CharField(max_length=100, required=False, allow_blank=True)
    confidence = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    rationale = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class OrderInputSerializer(StrictInputSerializer):
    """The body of ``POST /agents/{id}/trades``. Unknown or read-only members are a 400.

    Prices are whole cents, at most ``MAX_PRICE``; quantities have up to six decimal places,
    at most ``MAX_QUANTITY`` (``api.bounds``: what every supported database stores
    exactly). The ``agent`` in the context restricts symbols to its ``allowed_symbols``.
    """

    # The members of the Trade JSON that the server sets.
    read_only_names = (
        "id",
        "agent_id",
        "status",
        "filled_quantity",
        "avg_fill_price",
        "notional",
        "reserved_amount",
        "approval_request_id",
        "rejection_reason",
        "created_at",
        "updated_at",
        "filled_at",
        "cancelled_at",
    )

    symbol = serializers.CharField(max_length=16)
    side = serializers.ChoiceField(choices=Side.choices)
    type = serializers.ChoiceField(choices=OrderType.choices, default=OrderType.MARKET)
    quantity = serializers.DecimalField(max_digits=20, decimal_places=6, max_value=MAX_QUANTITY)
    limit_price = serializers.DecimalField(**PRICE, required=False, allow_null=True)
    stop_price = serializers.DecimalField(**PRICE, required=False, allow_null=True)
    time_in_force = serializers.ChoiceField(choices=TimeInForce.choices, default=TimeInForce.DAY)
    client_order_id = serializers.CharField(
        max_length=64, required=False, allow_null=True, allow_blank=False
    )
    metadata = OrderMetadataSerializer(required=False)

    def validate_symbol(self, value: str) -> str:
        symbol = symbol_normalised(value)
        if not market.is_known(symbol):
            raise serializers.ValidationError(f"Unknown symbol {symbol!r}.")
        allowed = self.context["agent"].effective_config.get("allowed_symbols")
        if allowed is not None and symbol not in allowed:
            raise serializers.ValidationError(f"This agent may not trade {symbol}.")
        return symbol

    def validate_quantity(self, value: Decimal) -> Decimal:
        if value <= 0:
            raise serializers.ValidationError("Must be greater than zero.")
        return value

    def validate(self, attrs: dict) -> dict:
        errors: dict[str, list[str]] = {}
        order_type = attrs["type"]
        for field, types in (("limit_price", LIMIT_TYPES), ("stop_price", STOP_TYPES)):
            value = attrs.get(field)
            if order_type in types:
                if value is None:
                    errors[field] = [f"Required for {order_type} orders."]
                elif value <= 0:
                    errors[field] = ["Must be greater than zero."]
            elif value is not None:
                errors[field] = [f"Not allowed for {order_type} orders."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


@dataclass(frozen=True)
class Order:
    """A validated order request."""

    symbol: str
    side: str
    type: str
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    time_in_force: str
    client_order_id: str | None
    metadata: dict


def order_validate(*, agent, data) -> Order:
    """Validate an order body for ``agent``; raises DRF ``ValidationError`` (→ 400 with
    ``errors``) when it is not a valid order."""
    if not isinstance(data, dict):
        raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
    payload = OrderInputSerializer(data=data, context={"agent": agent})
    payload.is_valid(raise_exception=True)
    values = payload.validated_data
    return Order(
        symbol=values["symbol"],
        side=values["side"],
        type=values["type"],
        quantity=values["quantity"],
        limit_price=values.get("limit_price"),
        stop_price=values.get("stop_price"),
        time_in_force=values["time_in_force"],
        client_order_id=values.get("client_order_id"),
        metadata=dict(values.get("metadata") or {}),
    )
