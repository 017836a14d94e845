"""The Trade JSON of SPEC §5 and the market price JSON."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import serializers

from trades.models import MarketPrice, Trade
from trades.representation import TRADE_FIELDS, approval_request_id, trade_representation
from trades.validation import OrderInputSerializer

MONEY = {"max_digits": 20, "decimal_places": 2}
QUANTITY = {"max_digits": 20, "decimal_places": 6}

__all__ = [
    "MarketPriceSerializer",
    "OrderInputSerializer",
    "TradeSerializer",
    "trade_rows",
]

# The columns a page of the trade list reads: the Trade JSON's fields, the approval request's
# id through the join (a row's ``approval_request__id``).
TRADE_ROW_FIELDS = tuple(
    "approval_request__id" if name == "approval_request_id" else name for name in TRADE_FIELDS
)


def trade_rows(queryset: QuerySet[Trade]) -> QuerySet:
    """``queryset`` as named rows of exactly the columns the Trade JSON shows, its filters and
    order kept: ``trade_representation`` builds a row's JSON as a Trade's."""
    return queryset.values_list(*TRADE_ROW_FIELDS, named=True)


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
        fields = list(TRADE_FIELDS)
        read_only_fields = fields

    def get_approval_request_id(self, trade: Trade) -> str | None:
        pk = approval_request_id(trade)
        return None if pk is None else str(pk)

    def to_representation(self, instance: Trade) -> dict:
        # The fields above describe the shape (OpenAPI) and format as trade_representation
        # does (tests/trades/test_trade_json.py); the document is built once, there.
        return trade_representation(instance, approval_request_id=approval_request_id(instance))


class MarketPriceSerializer(serializers.ModelSerializer):
    price = serializers.DecimalField(**MONEY, read_only=True)
    timestamp = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = MarketPrice
        fields = ["symbol", "price", "timestamp"]
        read_only_fields = fields
