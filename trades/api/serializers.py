"""The Trade JSON of SPEC §5 and the market price JSON."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from rest_framework import serializers

from trades.models import MarketPrice, Trade
from trades.validation import OrderInputSerializer

MONEY = {"max_digits": 20, "decimal_places": 2}
QUANTITY = {"max_digits": 20, "decimal_places": 6}

__all__ = ["MarketPriceSerializer", "OrderInputSerializer", "TradeSerializer"]


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
        try:
            approval_request = trade.approval_request
        except ObjectDoesNotExist:
            return None
        return str(approval_request.pk) if approval_request is not None else None


class MarketPriceSerializer(serializers.ModelSerializer):
    price = serializers.DecimalField(**MONEY, read_only=True)
    timestamp = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = MarketPrice
        fields = ["symbol", "price", "timestamp"]
        read_only_fields = fields
