"""The largest numbers the API accepts: what every supported database stores exactly.

SQLite has no decimal type. A ``DecimalField`` value is stored with numeric affinity, as a
double when it has a fraction: only 15 significant digits come back unchanged, and a value
such as ``9999999999999999.99`` came back as the integer ``10000000000000000``, which the
field's converter then refused (every list holding that row answered 500). Every bound below
keeps a stored value within 15 significant digits at its field's decimal places: prices within
12 (cents), quantities within 15 (six places), notionals within 14 (cents).

Usage quantities are whole numbers in a 64-bit integer column (PostgreSQL ``bigint``, SQLite
``INTEGER``). One event may carry at most ``MAX_USAGE_QUANTITY`` (a terabyte in bytes, a
trillion tokens); sums of them are computed so that they cannot overflow whatever the number
of events (``metering.services.usage_sums``).
"""

from __future__ import annotations

from decimal import Decimal

# A limit or stop price, in the account currency (cents).
MAX_PRICE = Decimal("1000000000")
# An order's quantity (six decimal places).
MAX_QUANTITY = Decimal("1000000000")
# An order's notional, quantity times price (cents).
MAX_NOTIONAL = Decimal("1000000000000")
# One usage event's quantity (whole units).
MAX_USAGE_QUANTITY = 10**12
