"""Agents, their positions and portfolio history.

Money is ``Decimal`` with two places (cents); share quantities have up to six places.
Invariant kept by ``agents.services`` / ``trades.services`` under a row lock on the agent:
``cash_balance + Σ position.cost_basis == budget + realized_pnl`` and
``0 <= reserved_cash <= cash_balance``.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from agents.choices import AgentStatus, Strategy
from api.representation import quantity_text

MONEY = {"max_digits": 20, "decimal_places": 2}
QUANTITY = {"max_digits": 20, "decimal_places": 6}
PRICE = {"max_digits": 20, "decimal_places": 4}

# The governance limits an owner may only tighten: at or below the operator-set ceilings of
# settings.AGENT_LIMIT_CEILINGS, which are also their defaults. For each, lower is stricter.
LIMIT_KEYS = (
    "auto_approval_limit",
    "approval_budget_fraction",
    "daily_trade_limit",
    "max_position_fraction",
)
CONFIG_KEYS = (*LIMIT_KEYS, "allowed_symbols")


def agent_config_defaults() -> dict:
    """The config of SPEC §5 an agent gets for what it does not set: each limit at its ceiling
    (``settings.AGENT_LIMIT_CEILINGS``), every market symbol allowed."""
    ceilings = settings.AGENT_LIMIT_CEILINGS
    return {
        "auto_approval_limit": str(ceilings["auto_approval_limit"]),
        "approval_budget_fraction": str(ceilings["approval_budget_fraction"]),
        "daily_trade_limit": int(ceilings["daily_trade_limit"]),
        "max_position_fraction": str(ceilings["max_position_fraction"]),
        "allowed_symbols": None,  # None: every market symbol
    }


class Agent(models.Model):
    """An autonomous trading agent owned by a user, with a cash budget and governance config."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="agents"
    )
    name = models.CharField(max_length=100)
    status = models.CharField(
        max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE
    )
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.CUSTOM)
    risk_tolerance = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(0), MaxValueValidator(10)]
    )
    budget = models.DecimalField(
        **MONEY,
        validators=[MinValueValidator(Decimal("1000")), MaxValueValidator(Decimal("1000000"))],
    )
    cash_balance = models.DecimalField(**MONEY)
    reserved_cash = models.DecimalField(**MONEY, default=Decimal("0"))
    realized_pnl = models.DecimalField(**MONEY, default=Decimal("0"))
    config = models.JSONField(default=dict)
    # Last sequence number handed to one of this agent's live events (realtime.services).
    event_seq = models.BigIntegerField(default=0)
    # The orders accepted in the UTC day ``trades_day`` (the ``daily_trade_limit`` of SPEC §5):
    # counted by the order workflow on the locked row, in the transaction that accepts each.
    trades_today = models.PositiveIntegerField(default=0)
    trades_day = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(cash_balance__gte=0), name="agent_cash_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(reserved_cash__gte=0), name="agent_reserved_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(reserved_cash__lte=F("cash_balance")), name="agent_reserved_within_cash"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def available_cash(self) -> Decimal:
        return self.cash_balance - self.reserved_cash

    @property
    def effective_config(self) -> dict:
        """The stored config over the defaults of SPEC §5."""
        return {**agent_config_defaults(), **(self.config or {})}

    def trades_on(self, day: date) -> int:
        """The orders accepted in the UTC ``day``, as this row counts them: none once the
        stored count is of an earlier day."""
        return self.trades_today if self.trades_day == day else 0


class Position(models.Model):
    """Shares of one symbol held by an agent. ``cost_basis`` is what they cost, in cents."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="positions")
    symbol = models.CharField(max_length=16)
    quantity = models.DecimalField(**QUANTITY, default=Decimal("0"))
    # Shares held for open sell orders; a sell needs quantity - reserved_quantity.
    reserved_quantity = models.DecimalField(**QUANTITY, default=Decimal("0"))
    cost_basis = models.DecimalField(**MONEY, default=Decimal("0"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "symbol"], name="position_unique_symbol"),
            models.CheckConstraint(
                condition=Q(quantity__gte=0), name="position_quantity_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(reserved_quantity__gte=0) & Q(reserved_quantity__lte=F("quantity")),
                name="position_reserved_within_quantity",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} x {quantity_text(self.quantity)}"

    @property
    def avg_price(self) -> Decimal:
        if not self.quantity:
            return Decimal("0")
        return (self.cost_basis / self.quantity).quantize(Decimal("0.0001"))


class PortfolioSnapshot(models.Model):
    """The agent's valuation at a moment: at creation, then on market ticks (at most one a
    minute, while it holds shares or trades)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="snapshots")
    timestamp = models.DateTimeField(db_index=True)
    cash_balance = models.DecimalField(**MONEY)
    positions_value = models.DecimalField(**MONEY)
    total_value = models.DecimalField(**MONEY)

    class Meta:
        ordering = ["timestamp"]
        indexes = [models.Index(fields=["agent", "timestamp"])]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.timestamp:%Y-%m-%d %H:%M} {self.total_value}"


class AgentLimitChange(models.Model):
    """The audit trail of an agent's governance config: who changed which setting, when, from
    what to what. Written in the transaction of the change (``agents.services``); never edited.

    ``actor`` is empty for the operator's own tools (management commands); ``actor_username``
    keeps the name should the user be deleted. ``before`` is null when the agent was created
    with the value; ``by_operator`` marks a change beyond a ceiling, made on an operator's
    authority.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="limit_changes")
    setting = models.CharField(max_length=32)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    by_operator = models.BooleanField(default=False)
    changed_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["agent", "-changed_at"])]

    def __str__(self) -> str:
        return f"{self.setting}: {self.before} → {self.after}"
