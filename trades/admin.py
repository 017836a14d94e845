"""Admin screens for orders, fills, the simulated market and idempotency records.

Orders are read-only; the one thing an operator may do is cancel them, through
``trades.services.trade_cancel`` (a final order answers 409 there, shown as a message; a
pending-approval order also cancels its approval request).
"""

from __future__ import annotations

from django.contrib import admin

from agents.admin import ReadOnlyAdmin, ReadOnlyInline, run_service_action
from trades.models import Fill, IdempotencyRecord, MarketPrice, Trade


class FillInline(ReadOnlyInline):
    model = Fill
    fields = ("quantity", "price", "notional", "realized_pnl", "executed_at")
    readonly_fields = fields


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id",
        "agent",
        "side",
        "quantity",
        "symbol",
        "type",
        "time_in_force",
        "status",
        "limit_price",
        "avg_fill_price",
        "notional",
        "reserved_amount",
        "created_at",
    )
    list_filter = ("status", "side", "type", "time_in_force", "symbol")
    search_fields = ("id", "client_order_id", "symbol", "agent__name", "agent__id")
    list_select_related = ("agent",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    inlines = (FillInline,)
    actions = ("cancel_trades",)
    readonly_fields = (
        "id",
        "agent",
        "client_order_id",
        "symbol",
        "side",
        "type",
        "time_in_force",
        "quantity",
        "limit_price",
        "stop_price",
        "stop_triggered",
        "status",
        "filled_quantity",
        "avg_fill_price",
        "notional",
        "reserved_amount",
        "reserved_quantity",
        "rejection_reason",
        "metadata",
        "market_day",
        "created_at",
        "updated_at",
        "filled_at",
        "cancelled_at",
    )
    fields = readonly_fields

    @admin.display(description="id", ordering="id")
    def short_id(self, trade: Trade) -> str:
        return str(trade.id)[:8]

    @admin.action(description="Cancel selected orders (releases their reservations)")
    def cancel_trades(self, request, queryset):
        from trades.services import trade_cancel

        run_service_action(
            self,
            request,
            queryset.select_related("agent"),
            lambda trade: trade_cancel(
                trade=trade, actor=request.user, reason="cancelled by an operator in the admin"
            ),
            done="Cancelled",
            label=lambda trade: f"Trade {str(trade.id)[:8]} ({trade})",
        )


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ("trade", "quantity", "price", "notional", "realized_pnl", "executed_at")
    search_fields = ("trade__id", "trade__symbol", "trade__agent__name")
    list_filter = ("trade__symbol",)
    list_select_related = ("trade",)
    ordering = ("-executed_at",)
    date_hierarchy = "executed_at"


@admin.register(MarketPrice)
class MarketPriceAdmin(ReadOnlyAdmin):
    list_display = ("symbol", "price", "seq", "market_day", "updated_at")
    search_fields = ("symbol",)
    ordering = ("symbol",)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ("key", "agent", "response_status", "trade", "created_at")
    list_filter = ("response_status",)
    search_fields = ("key", "agent__name", "agent__id", "trade__id")
    list_select_related = ("agent", "trade")
    ordering = ("-created_at",)
