"""Orders (called trades in the API), their fills, the simulated market and idempotency keys."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q

from agents.models import MONEY, PRICE, QUANTITY, Agent
from api.representation import quantity_text
from trades.choices import OrderType, Side, TimeInForce, TradeStatus


class Trade(models.Model):
    """An order placed by an agent, from acceptance to its final status.

    ``reserved_amount`` is the cash held for a buy while it is pending approval or open;
    ``reserved_quantity`` the shares held for a sell. Both return to zero when it ends.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="trades")
    client_order_id = models.CharField(max_length=64, null=True, blank=True)
    symbol = models.CharField(max_length=16)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=10, choices=OrderType.choices, default=OrderType.MARKET)
    time_in_force = models.CharField(
        max_length=3, choices=TimeInForce.choices, default=TimeInForce.DAY
    )
    quantity = models.DecimalField(**QUANTITY)
    limit_price = models.DecimalField(**PRICE, null=True, blank=True)
    stop_price = models.DecimalField(**PRICE, null=True, blank=True)
    status = models.CharField(max_length=16, choices=TradeStatus.choices, db_index=True)
    filled_quantity = models.DecimalField(**QUANTITY, default=Decimal("0"))
    avg_fill_price = models.DecimalField(**PRICE, null=True, blank=True)
    # Filled notional once filled; the estimated notional (used for checks) before.
    notional = models.DecimalField(**MONEY, default=Decimal("0"))
    reserved_amount = models.DecimalField(**MONEY, default=Decimal("0"))
    reserved_quantity = models.DecimalField(**QUANTITY, default=Decimal("0"))
    # A stop or stop-limit order becomes live once the market touches its stop price.
    stop_triggered = models.BooleanField(default=False)
    rejection_reason = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    # The simulated market day a `day` order belongs to; it expires when that day ends.
    market_day = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    filled_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["agent", "-created_at"]),
            models.Index(fields=["status", "symbol"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "client_order_id"],
                condition=Q(client_order_id__isnull=False),
                name="trade_unique_client_order_id",
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="trade_quantity_positive"),
            models.CheckConstraint(
                condition=Q(reserved_amount__gte=0), name="trade_reserved_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.side} {quantity_text(self.quantity)} {self.symbol} ({self.status})"


class Fill(models.Model):
    """One execution of (part of) an order at a price."""

    trade = models.ForeignKey(Trade, on_delete=models.CASCADE, related_name="fills")
    quantity = models.DecimalField(**QUANTITY)
    price = models.DecimalField(**PRICE)
    notional = models.DecimalField(**MONEY)
    realized_pnl = models.DecimalField(**MONEY, default=Decimal("0"))
    executed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["executed_at"]

    def __str__(self) -> str:
        return f"{self.quantity} @ {self.price}"


class MarketPrice(models.Model):
    """The current simulated price of one symbol, shared by every server process."""

    symbol = models.CharField(max_length=16, primary_key=True)
    price = models.DecimalField(**PRICE)
    # Tick counter per symbol: the `seq` of market.price events.
    seq = models.BigIntegerField(default=0)
    # Simulated trading day number the price belongs to (for `day` orders).
    market_day = models.IntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return f"{self.symbol} {self.price}"


class IdempotencyRecord(models.Model):
    """The first answer given to an idempotency key, replayed for identical retries."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="idempotency_records")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    trade = models.ForeignKey(Trade, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "key"], name="idempotency_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.key} → {self.response_status}"
