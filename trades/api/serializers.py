"""The Trade JSON of SPEC §5 and the market price JSON."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone
from rest_framework import serializers

from trades.models import MarketPrice, Trade
from trades.validation import OrderInputSerializer

MONEY = {"max_digits": 20, "decimal_places": 2}
QUANTITY = {"max_digits": 20, "decimal_places": 6}

__all__ = ["MarketPriceSerializer", "OrderInputSerializer", "TradeSerializer", "trade_json"]

_MONEY_EXP = Decimal(1).scaleb(-MONEY["decimal_places"])
_QUANTITY_EXP = Decimal(1).scaleb(-QUANTITY["decimal_places"])


def _decimal(value, exp: Decimal) -> str | None:
    # DRF's DecimalField: quantized half-even to the field's places, fixed-point string.
    if value is None:
        return None
    if not isinstance(value, Decimal):
        value = Decimal(str(value).strip())
    return f"{value.quantize(exp, rounding=ROUND_HALF_EVEN):f}"


def _datetime(value) -> str | None:
    # DRF's DateTimeField: in the current time zone, ISO 8601, "Z" for UTC.
    if value is None:
        return None
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _approval_request_id(trade: Trade) -> str | None:
    try:
        approval_request = trade.approval_request
    except ObjectDoesNotExist:
        return None
    return str(approval_request.pk) if approval_request is not None else None


def trade_json(trade: Trade) -> dict:
    """The Trade JSON of SPEC §5, built directly: what ``TradeSerializer`` answers.

    Every order is serialized several times (the response, each live event, the idempotency
    record) and a page of the trade list fifty times; DRF's field machinery cost about 3 ms
    per trade on the benchmark machine, this costs a few hundredths of that. The serializer
    keeps describing the shape for the OpenAPI schema, and a test holds the two equal.
    """
    return {
        "id": str(trade.pk),
        "agent_id": str(trade.agent_id),
        "client_order_id": trade.client_order_id,
        "symbol": trade.symbol,
        "side": trade.side,
        "type": trade.type,
        "time_in_force": trade.time_in_force,
        "quantity": _decimal(trade.quantity, _QUANTITY_EXP),
        "limit_price": _decimal(trade.limit_price, _MONEY_EXP),
        "stop_price": _decimal(trade.stop_price, _MONEY_EXP),
        "status": trade.status,
        "filled_quantity": _decimal(trade.filled_quantity, _QUANTITY_EXP),
        "avg_fill_price": _decimal(trade.avg_fill_price, _MONEY_EXP),
        "notional": _decimal(trade.notional, _MONEY_EXP),
        "reserved_amount": _decimal(trade.reserved_amount, _MONEY_EXP),
        "approval_request_id": _approval_request_id(trade),
        "rejection_reason": trade.rejection_reason,
        "metadata": trade.metadata,
        "created_at": _datetime(trade.created_at),
        "updated_at": _datetime(trade.updated_at),
        "filled_at": _datetime(trade.filled_at),
        "cancelled_at": _datetime(trade.cancelled_at),
    }


class TradeSerializer(serializers.ModelSerializer):
    """An order as the API shows it. ``approval_request_id`` comes from the reverse one-to-one
    ``trade.approval_request``: select_related it (``trades.selectors``) to avoid a query."""

    agent_id = serializers.UUIDField(read_only=True)
    quantity = serializers.DecimalField(**QUANTITY, read_only=True)
    filled_quantity = serializers.DecimalField(**QUANTITY, read_only=True)
    limit_price = serializers.DecimalField(**MONEY, read_only=True, allow_null=True)
    stop_price = serializers.DecimalField(**MONEY, read_only=True, allow_null=True)
    avg_fill_price = serializers.DecimalField(**MONEY, read_only=True, allow_null=True)
    notional = serializers.DecimalField(**MONEY, read_only=True)
    reserved_amount = serializers.DecimalField(**MONEY, read_only=True)
    approval_request_id = serializers.SerializerMethodField()

    class Meta:
        model = Trade
        fields = [
            "id",
            "agent_id",
            "client_order_id",
            "symbol",
            "side",
            "type",
            "time_in_force",
            "quantity",
            "limit_price",
            "stop_price",
            "status",
            "filled_quantity",
            "avg_fill_price",
            "notional",
            "reserved_amount",
            "approval_request_id",
            "rejection_reason",
            "metadata",
            "created_at",
            "updated_at",
            "filled_at",
            "cancelled_at",
        ]
        read_only_fields = fields

    def get_approval_request_id(self, trade: Trade) -> str | None:
        return _approval_request_id(trade)

    def to_representation(self, instance: Trade) -> dict:
        # The fields above describe the shape (OpenAPI); trade_json builds it fast.
        return trade_json(instance)


class MarketPriceSerializer(serializers.ModelSerializer):
    price = serializers.DecimalField(**MONEY, read_only=True)
    timestamp = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = MarketPrice
        fields = ["symbol", "price", "timestamp"]
        read_only_fields = fields
