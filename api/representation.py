"""Values as the API's JSON shows them: DRF's ``DecimalField`` and ``DateTimeField`` formats.

The documents published both over REST and as live events (an order, a portfolio) are built
by one function each (``trades.representation``, ``agents.representation``) that their
serializers use; these helpers format exactly as DRF's fields do with this project's
settings, and tests hold each document equal to its serializer's declared fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from decimal import Decimal

from django.utils import timezone


def decimal_text(value, places: int) -> str | None:
    """DRF's ``DecimalField(decimal_places=places)``: rounded to ``places`` as DRF's quantize
    rounds (the decimal context's rounding, half-even by default), fixed point.

    Formatting with a precision rounds in one step, as ``quantize`` would."""
    if value is None:
        return None
    if not isinstance(value, Decimal):
        value = Decimal(str(value).strip())
    return f"{value:.{places}f}"


def quantity_text(value: Decimal) -> str:
    """A quantity in prose (messages, admin, logs): no trailing zeros, no exponent ("50",
    "1.5"), where the JSON keeps its fixed six places."""
    return f"{value.normalize():f}"


def datetime_text(value, tz: tzinfo | None = None) -> str | None:
    """DRF's ``DateTimeField``: in the current time zone, ISO 8601, ``Z`` for UTC.

    ``tz`` is the current time zone when the caller already has it: the lookup reads a
    context-local value, and a document has several datetimes, so a caller formatting many
    looks it up once.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        # A naive value is refused by ``localtime`` (the project stores aware datetimes).
        text = timezone.localtime(value, tz).isoformat()
    else:
        # An aware value: the conversion ``localtime`` makes, called directly (a page of
        # orders formats many).
        text = value.astimezone(tz or timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def utc_text(value: datetime | None = None) -> str:
    """``value`` (by default now) in UTC, ISO 8601 with ``Z``: the timestamps that follow no
    time zone setting (live events, health answers, a rate limit's reset time)."""
    value = datetime.now(UTC) if value is None else value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")
