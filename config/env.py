"""Small helpers that read typed values from the process environment.

Every setting the project reads from the environment goes through these, from
``config.settings`` only, so that one module documents the whole configuration.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


def env_decimal(name: str, default: str, *, minimum: Decimal | None = None) -> Decimal:
    """A decimal number, exactly as written (money and fractions are never floats)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        raw = default
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite():
        raise ImproperlyConfigured(f"{name} must be a finite decimal number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_rate(raw: str) -> tuple[int, int]:
    """Parse a rate such as ``100/15m`` into ``(count, seconds)``.

    Units: ``s``, ``m``, ``h``, ``d``, optionally prefixed by a multiplier
    (``15m`` is fifteen minutes). A bare unit means one of it.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        count_text, period = raw.strip().split("/", 1)
        count = int(count_text)
        unit = period[-1].lower()
        multiplier = int(period[:-1]) if period[:-1] else 1
        seconds = multiplier * units[unit]
    except (ValueError, KeyError, IndexError):
        raise ImproperlyConfigured(
            f"RATE_LIMIT must look like '100/15m' (count/period with s, m, h or d), got {raw!r}"
        ) from None
    if count < 1 or seconds < 1:
        raise ImproperlyConfigured(f"RATE_LIMIT must be positive, got {raw!r}")
    return count, seconds
