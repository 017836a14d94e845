"""The Trade JSON of SPEC §5 and the market price JSON."""

from __future__ import annotations

from datetime import tzinfo

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import serializers

from config.representation import datetime_text, decimal_text
from trades.models import MarketPrice, Trade
from trades.validation import OrderInputSerializer

MONEY = {"max_digits": 20, "decimal_places": 2}
QUANTITY = {"max_digits": 20, "decimal_places": 6}

__all__ = [
    "MarketPriceSerializer",
    "OrderInputSerializer",
    "TradeSerializer",
    "trade_json",
    "trade_row_json",
    "trade_rows",
]

_MONEY_PLACES = MONEY["decimal_places"]
_QUANTITY_PLACES = QUANTITY["decimal_places"]


def _approval_request_id(trade: Trade) -> str | None:
    try:
        approval_request = trade.approval_request
    except ObjectDoesNotExist:
        return None
    return str(approval_request.pk) if approval_request is not None else None


def trade_json(trade: Trade, tz: tzinfo | None = None) -> dict:
    """The Trade JSON of SPEC §5, built directly: what ``TradeSerializer`` answers.

    Every order is serialized several times (the response, each live event, the idempotency
    record); DRF's field machinery cost about 3 ms per trade on the benchmark machine, this
    costs a few hundredths of that. The serializer keeps describing the shape for the OpenAPI
    schema, and a test holds the two equal.
    ``tz``: the current time zone, when the caller serializes many trades.
    """
    return _json(
        trade,
        str(trade.pk),
        _approval_request_id(trade),
        tz or timezone.get_current_timezone(),
    )


def trade_rows(queryset: QuerySet[Trade]) -> QuerySet:
    """``queryset`` as named rows for ``trade_row_json``, its filters and order kept.

    A page of the trade list is read as rows of the columns it shows, not as models: building
    fifty Trade instances cost more than the page's JSON."""
    return queryset.values_list(*TRADE_ROW_FIELDS, named=True)


def trade_row_json(row, tz: tzinfo) -> dict:
    """``trade_json`` of a row of ``trade_rows``."""
    approval_request_id = row.approval_request__id
    return _json(
        row,
        str(row.id),
        None if approval_request_id is None else str(approval_request_id),
        tz,
    )


def _json(trade, pk: str, approval_request_id: str | None, tz: tzinfo) -> dict:
    """The JSON of a Trade or of a row with the Trade's field names."""
    return {
        "id": pk,
        "agent_id": str(trade.agent_id),
        "client_order_id": trade.client_order_id,
        "symbol": trade.symbol,
        "side": trade.side,
        "type": trade.type,
        "time_in_force": trade.time_in_force,
        "quantity": decimal_text(trade.quantity, _QUANTITY_PLACES),
        "limit_price": decimal_text(trade.limit_price, _MONEY_PLACES),
        "stop_price": decimal_text(trade.stop_price, _MONEY_PLACES),
        "status": trade.status,
        "filled_quantity": decimal_text(trade.filled_quantity, _QUANTITY_PLACES),
        "avg_fill_price": decimal_text(trade.avg_fill_price, _MONEY_PLACES),
        "notional": decimal_text(trade.notional, _MONEY_PLACES),
        "reserved_amount": decimal_text(trade.reserved_amount, _MONEY_PLACES),
        "approval_request_id": approval_request_id,
        "rejection_reason": trade.rejection_reason,
        "metadata": trade.metadata,
        "created_at": datetime_text(trade.created_at, tz),
        "updated_at": datetime_text(trade.updated_at, tz),
        "filled_at": datetime_text(trade.filled_at, tz),
        "cancelled_at": datetime_text(trade.cancelled_at, tz),
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


# The columns of ``trade_rows``: the serializer's fields, the approval request's id through the
# join (a row's ``approval_request__id``).
TRADE_ROW_FIELDS = tuple(
    "approval_request__id" if name == "approval_request_id" else name
    for name in TradeSerializer.Meta.fields
)


class MarketPriceSerializer(serializers.ModelSerializer):
    price = serializers.DecimalField(**MONEY, read_only=True)
    timestamp = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = MarketPrice
        fields = ["symbol", "price", "timestamp"]
        read_only_fields = fields
