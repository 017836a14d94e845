"""The Trade JSON of SPEC §5, built in one place.

``TradeSerializer`` (the REST API) answers what ``trade_representation`` builds, and the live
events of ``trades.services`` publish it too, so an order looks the same over REST and over
the WebSocket. Values are formatted as DRF's ``DecimalField`` and ``DateTimeField`` format
them (``api.representation``); a test holds the serializer's declared fields equal to it.
"""

from __future__ import annotations

from datetime import tzinfo
from uuid import UUID

from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from api.representation import datetime_text, decimal_text

MONEY_PLACES = 2
QUANTITY_PLACES = 6

# The keys of the Trade JSON, in order. All but ``approval_request_id`` are Trade fields.
TRADE_FIELDS = (
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
)


def approval_request_id(trade) -> UUID | None:
    """The id of ``trade``'s approval request (None if it has none), read through the reverse
    one-to-one ``trade.approval_request``: ``select_related`` it to read it without a query."""
    try:
        return trade.approval_request.pk
    except ObjectDoesNotExist:
        return None


def trade_representation(
    trade, *, approval_request_id: UUID | str | None, tz: tzinfo | None = None
) -> dict:
    """The Trade JSON of ``trade`` (a Trade, or a row with the Trade's field names).

    ``approval_request_id``: the order's approval request, given by the caller, which knows
    it (an order being placed) or read it (``approval_request_id(trade)``). ``tz``: the
    current time zone, when the caller builds many documents.
    """
    tz = tz or timezone.get_current_timezone()
    return {
        "id": str(trade.id),
        "agent_id": str(trade.agent_id),
        "client_order_id": trade.client_order_id,
        "symbol": trade.symbol,
        "side": trade.side,
        "type": trade.type,
        "time_in_force": trade.time_in_force,
        "quantity": decimal_text(trade.quantity, QUANTITY_PLACES),
        "limit_price": decimal_text(trade.limit_price, MONEY_PLACES),
        "stop_price": decimal_text(trade.stop_price, MONEY_PLACES),
        "status": trade.status,
        "filled_quantity": decimal_text(trade.filled_quantity, QUANTITY_PLACES),
        "avg_fill_price": decimal_text(trade.avg_fill_price, MONEY_PLACES),
        "notional": decimal_text(trade.notional, MONEY_PLACES),
        "reserved_amount": decimal_text(trade.reserved_amount, MONEY_PLACES),
        "approval_request_id": None if approval_request_id is None else str(approval_request_id),
        "rejection_reason": trade.rejection_reason,
        "metadata": trade.metadata,
        "created_at": datetime_text(trade.created_at, tz),
        "updated_at": datetime_text(trade.updated_at, tz),
        "filled_at": datetime_text(trade.filled_at, tz),
        "cancelled_at": datetime_text(trade.cancelled_at, tz),
    }
