"""Money arithmetic shared by portfolios and orders: ``Decimal`` only, cents, half up."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0")


def cents(value: Decimal | int | str) -> Decimal:
    """``value`` rounded to whole cents, half up (the rounding of every booked amount)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def whole_dollars(value: Decimal) -> int:
    """``value`` rounded to whole dollars, half up (the unit of ``trade_volume`` usage)."""
    return int(Decimal(value).to_integral_value(rounding=ROUND_HALF_UP))
