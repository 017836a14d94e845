"""The simulated market: one current price per symbol, shared by every process.

Prices live in ``MarketPrice`` rows, created on first use from a seeded table. ``tick`` moves
each symbol by a seeded random walk: the step of a symbol's tick number ``seq`` depends only on
``MARKET_SEED``, the symbol and ``seq``, so a run is reproducible. The simulated day number
(``market_day``) is the number of whole ``MARKET_DAY_SECONDS`` since the Unix epoch; ``day``
orders expire when it changes. Prices are whole cents.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from agents.money import cents
from api import problems
from api.representation import utc_text
from trades.models import MarketPrice

# Opening prices of the usual symbols; any other symbol gets a seeded price in [20, 500).
BASE_PRICES = {
    "AAPL": Decimal("190.00"),
    "GOOGL": Decimal("140.00"),
    "MSFT": Decimal("410.00"),
    "AMZN": Decimal("180.00"),
    "TSLA": Decimal("250.00"),
    "NVDA": Decimal("120.00"),
    "META": Decimal("500.00"),
    "NFLX": Decimal("600.00"),
    "SPY": Decimal("520.00"),
    "QQQ": Decimal("440.00"),
}
# Standard deviation of one tick's relative move, and the pull back towards the base price
# per tick that keeps a long-running demo from drifting to absurd prices.
VOLATILITY = 0.002
MEAN_REVERSION = 0.001
MIN_PRICE = Decimal("0.01")


def _rng(*parts) -> random.Random:
    # Not for security: a reproducible simulation.
    return random.Random(":".join(str(p) for p in (settings.MARKET_SEED, *parts)))  # noqa: S311


def base_price(symbol: str) -> Decimal:
    """The opening price of ``symbol``."""
    if symbol in BASE_PRICES:
        return BASE_PRICES[symbol]
    return cents(Decimal(str(_rng(symbol, "base").uniform(20, 500))))


def market_day(now: datetime | None = None) -> int:
    """The simulated trading day ``now`` falls in."""
    now = now or timezone.now()
    return int(now.timestamp()) // settings.MARKET_DAY_SECONDS


def day_end(day: int) -> datetime:
    """When simulated day ``day`` ends."""
    return datetime.fromtimestamp((day + 1) * settings.MARKET_DAY_SECONDS, tz=UTC)


def is_known(symbol: str) -> bool:
    return symbol in settings.MARKET_SYMBOLS


def _ensure_rows(symbols) -> None:
    now = timezone.now()
    MarketPrice.objects.bulk_create(
        [
            MarketPrice(
                symbol=symbol, price=base_price(symbol), market_day=market_day(now), updated_at=now
            )
            for symbol in symbols
        ],
        ignore_conflicts=True,
    )


def _unknown(symbol: str) -> problems.NotFound:
    return problems.NotFound(f"Unknown symbol {symbol!r}.", symbol=symbol)


def current_price(symbol: str) -> Decimal:
    """The current price of a market symbol; ``problems.NotFound`` for any other symbol."""
    symbol = symbol.upper()
    if not is_known(symbol):
        raise _unknown(symbol)
    price = MarketPrice.objects.filter(pk=symbol).values_list("price", flat=True).first()
    if price is None:
        _ensure_rows([symbol])
        price = MarketPrice.objects.values_list("price", flat=True).get(pk=symbol)
    return cents(price)


def price_row(symbol: str) -> MarketPrice:
    """The ``MarketPrice`` row of a market symbol (price, seq, timestamp)."""
    symbol = symbol.upper()
    if not is_known(symbol):
        raise _unknown(symbol)
    row = MarketPrice.objects.filter(pk=symbol).first()
    if row is None:
        _ensure_rows([symbol])
        row = MarketPrice.objects.get(pk=symbol)
    return row


def all_prices() -> list[MarketPrice]:
    """The rows of every symbol of ``MARKET_SYMBOLS``, in that order."""
    rows = {row.symbol: row for row in MarketPrice.objects.filter(pk__in=settings.MARKET_SYMBOLS)}
    missing = [symbol for symbol in settings.MARKET_SYMBOLS if symbol not in rows]
    if missing:
        _ensure_rows(missing)
        rows.update({row.symbol: row for row in MarketPrice.objects.filter(pk__in=missing)})
    return [rows[symbol] for symbol in settings.MARKET_SYMBOLS]


def prices_for(symbols) -> dict[str, Decimal]:
    """Current prices of ``symbols`` (a symbol that left ``MARKET_SYMBOLS`` keeps its last
    known price, or its base price). One query; none for an empty set."""
    symbols = set(symbols)
    if not symbols:
        return {}
    rows = dict(MarketPrice.objects.filter(symbol__in=symbols).values_list("symbol", "price"))
    return prices_completed({symbol: rows.get(symbol) for symbol in symbols})


def price_expression(symbol: str | OuterRef) -> Subquery:
    """The current price of ``symbol`` (a symbol, or an ``OuterRef`` to one) as a subquery, to
    read with the rows of another query (``annotate``): NULL while the symbol has no
    ``MarketPrice`` row yet. Pass what it read through ``prices_completed``."""
    return Subquery(MarketPrice.objects.filter(symbol=symbol).order_by().values("price")[:1])


def prices_completed(prices: dict[str, Decimal | None]) -> dict[str, Decimal]:
    """Prices read by ``price_expression`` (symbol → price, None for a symbol without a
    ``MarketPrice`` row), as ``prices_for`` answers them: in cents, a symbol without a row
    given its row and its base price."""
    missing = sorted(symbol for symbol, price in prices.items() if price is None)
    if missing:
        _ensure_rows(missing)
    return {
        symbol: base_price(symbol) if price is None else cents(price)
        for symbol, price in prices.items()
    }


def _step(symbol: str, seq: int, price: Decimal) -> Decimal:
    rng = _rng(symbol, seq)
    base = base_price(symbol)
    drift = MEAN_REVERSION * float((base - price) / base)
    moved = price * Decimal(str(1 + drift + rng.gauss(0.0, VOLATILITY)))
    return max(cents(moved), MIN_PRICE)


def tick(*, now: datetime | None = None, force: bool = False) -> list[MarketPrice]:
    """Advance every symbol one step of the random walk; returns the rows that moved.

    Every serving process runs the market job; a tick within half an interval of the last one
    is another process's and is skipped (unless ``force``), so the market moves once per
    ``MARKET_TICK_MS`` however many processes serve. Price changes are published to the
    ``market`` channel after commit.
    """
    now = now or timezone.now()
    all_prices()
    with transaction.atomic():
        rows = list(
            MarketPrice.objects.select_for_update()
            .filter(pk__in=settings.MARKET_SYMBOLS)
            .order_by("symbol")
        )
        newest = max((row.updated_at for row in rows), default=None)
        half_interval = timedelta(milliseconds=settings.MARKET_TICK_MS / 2)
        if not force and newest is not None and now - newest < half_interval:
            return []
        day = market_day(now)
        for row in rows:
            row.seq += 1
            row.price = _step(row.symbol, row.seq, cents(row.price))
            row.market_day = day
            row.updated_at = now
        MarketPrice.objects.bulk_update(rows, ["price", "seq", "market_day", "updated_at"])
        published = [(row.symbol, row.price, row.seq) for row in rows]
        transaction.on_commit(lambda: _publish(published, now))
    return rows


def set_price(symbol: str, price: Decimal | str, *, now: datetime | None = None) -> MarketPrice:
    """Set a symbol's price (a tick with a chosen price): for tests and demos that drive the
    feed deterministically. Match resting orders afterwards with
    ``trades.services.orders_match``."""
    now = now or timezone.now()
    row = price_row(symbol)
    with transaction.atomic():
        row = MarketPrice.objects.select_for_update().get(pk=row.pk)
        row.price = cents(Decimal(str(price)))
        row.seq += 1
        row.market_day = market_day(now)
        row.updated_at = now
        row.save()
        published = [(row.symbol, row.price, row.seq)]
        transaction.on_commit(lambda: _publish(published, now))
    return row


def _publish(published: list[tuple[str, Decimal, int]], now: datetime) -> None:
    from realtime.services import publish_market_prices

    publish_market_prices(published, timestamp=utc_text(now))
