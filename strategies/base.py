"""What every strategy reads and returns, and the sizing rules they share.

A strategy sees only a ``Market`` (each symbol's recent prices, oldest first, and the market
feed's tick number of the newest one) and a ``Book`` (the agent's cash, shares, open orders and
the governance limits that apply to it). It returns a ``Decision``. Money and quantities are
``Decimal``; quantities are whole shares.

Each ``OrderIntent`` carries a ``signal``: a string that names the market event the order
answers (for example ``cross-up:AAPL:1234``, the tick at which a moving average crossed).
The runner derives the order's ``Idempotency-Key`` from it, so the same signal decided twice
(a retry, or a restart that sees the same ticks) is one order at the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, ClassVar

ZERO = Decimal(0)
CENT = Decimal("0.01")
# Normal orders stay this far under the approval threshold, so only the deliberately
# oversized ones wait for an operator.
UNDER_THRESHOLD = Decimal("0.9")
# An oversized order is this much above the threshold.
OVER_THRESHOLD = Decimal("1.1")
# Room left under the server's position cap for price moves between decision and fill.
POSITION_MARGIN = Decimal("0.95")


@dataclass(frozen=True)
class Market:
    """Recent prices per symbol, oldest first (the last is the current price), and the tick
    number (``seq`` of the ``market.price`` event) of each symbol's newest price."""

    history: Mapping[str, Sequence[Decimal]]
    last_seq: Mapping[str, int] = field(default_factory=dict)

    def price(self, symbol: str) -> Decimal | None:
        prices = self.history.get(symbol)
        return prices[-1] if prices else None

    def seq(self, symbol: str) -> int:
        return self.last_seq.get(symbol, 0)


@dataclass(frozen=True)
class OpenOrder:
    """An order of the agent that is open (resting) or waiting for approval."""

    id: str
    symbol: str
    side: str
    type: str
    quantity: Decimal
    limit_price: Decimal | None
    status: str


@dataclass(frozen=True)
class Book:
    """The agent's side: cash, shares and the limits the server applies to its orders.

    ``held`` is every share owned; ``sellable`` excludes shares held for open sell orders.
    ``approval_threshold`` is the notional at and above which an order waits for an operator;
    ``max_position_value`` the server's cap on one symbol's position (at cost).
    ``buys_placed`` counts the buy orders this agent placed so far (for ``oversize_every``).
    """

    budget: Decimal
    available_cash: Decimal
    held: Mapping[str, Decimal]
    sellable: Mapping[str, Decimal]
    open_orders: Sequence[OpenOrder]
    approval_threshold: Decimal
    max_position_value: Decimal
    symbols: Sequence[str]
    buys_placed: int = 0

    @property
    def awaiting_approval(self) -> bool:
        return any(order.status == "pending_approval" for order in self.open_orders)

    def open_for(self, symbol: str, side: str) -> list[OpenOrder]:
        return [o for o in self.open_orders if o.symbol == symbol and o.side == side]

    def after(self, intent: OrderIntent, price: Decimal) -> Book:
        """This book as if ``intent`` had just been accepted: an open order (waiting for
        approval if its notional reaches the threshold), its cash or shares set aside. A
        decision over several symbols sizes each order on what the previous ones left."""
        notional = intent.quantity * (intent.limit_price or price)
        status = "pending_approval" if notional >= self.approval_threshold else "open"
        placeholder = OpenOrder(
            f"decided:{intent.signal}",
            intent.symbol,
            intent.side,
            intent.type,
            intent.quantity,
            intent.limit_price,
            status,
        )
        cash, sellable = self.available_cash, dict(self.sellable)
        if intent.side == "buy":
            cash = max(ZERO, cash - notional)
        else:
            sellable[intent.symbol] = sellable.get(intent.symbol, ZERO) - intent.quantity
        return replace(
            self,
            available_cash=cash,
            sellable={s: q for s, q in sellable.items() if q > 0},
            open_orders=(*self.open_orders, placeholder),
            buys_placed=self.buys_placed + (intent.side == "buy"),
        )


@dataclass(frozen=True)
class OrderIntent:
    """An order to place. ``type`` is ``market`` or ``limit`` (with ``limit_price``)."""

    symbol: str
    side: str
    quantity: Decimal
    signal: str
    reason: str
    type: str = "market"
    limit_price: Decimal | None = None

    def describe(self) -> str:
        price = f" @ {self.limit_price}" if self.limit_price is not None else ""
        return f"{self.side} {self.quantity} {self.symbol} {self.type}{price}"


@dataclass(frozen=True)
class Cancel:
    """A resting order to cancel, and why."""

    order_id: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """What to do now: cancellations first, then orders; ``reason`` says why (also for a hold)."""

    reason: str
    orders: tuple[OrderIntent, ...] = ()
    cancels: tuple[Cancel, ...] = ()

    @property
    def acts(self) -> bool:
        return bool(self.orders or self.cancels)

    @classmethod
    def hold(cls, reason: str) -> Decision:
        return cls(reason=reason)


def combine(decisions: Sequence[Decision], *, idle: str) -> Decision:
    """One decision from per-symbol decisions: their orders and cancels, the reasons of those
    that act (or ``idle`` plus the first hold's reason when none does)."""
    acting = [d for d in decisions if d.acts]
    if not acting:
        first = next((d.reason for d in decisions if d.reason), "")
        return Decision.hold(f"{idle}; {first}" if first else idle)
    return Decision(
        reason="; ".join(d.reason for d in acting),
        orders=tuple(o for d in acting for o in d.orders),
        cancels=tuple(c for d in acting for c in d.cancels),
    )


# --- parameters --------------------------------------------------------------------------------


def _coerce(name: str, default: Any, value: Any) -> Any:
    if default is None or isinstance(default, list | tuple):
        if value is None:
            return None
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of symbols")
        return [v.upper() for v in value]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ValueError(f"{name} must be a whole number")
        try:
            number = int(str(value))
        except ValueError:
            raise ValueError(f"{name} must be a whole number") from None
        if number < 0:
            raise ValueError(f"{name} must not be negative")
        return number
    if isinstance(default, Decimal):
        if isinstance(value, bool):
            raise ValueError(f"{name} must be a number")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{name} must be a number") from None
        if not number.is_finite() or number < 0:
            raise ValueError(f"{name} must be a non-negative number")
        return number
    return value


class Strategy:
    """Base of the built-in strategies: parameters over defaults, and shared sizing.

    Parameters common to all (``COMMON``): ``order_fraction`` of the available cash per buy,
    ``max_position_fraction`` of the budget in one symbol (never above the server's cap),
    ``symbols`` to trade (default: every symbol the agent may trade), and ``oversize_every``:
    when N > 0, every Nth buy is sized just above the approval threshold (if none is already
    waiting), so that an operator has something to decide.
    """

    name: ClassVar[str] = ""
    COMMON: ClassVar[dict[str, Any]] = {
        "order_fraction": Decimal("0.05"),
        "max_position_fraction": Decimal("0.2"),
        "symbols": None,
        "oversize_every": 0,
    }
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Mapping[str, Any] | None = None):
        defaults = {**self.COMMON, **self.DEFAULTS}
        params = dict(params or {})
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ValueError(f"unknown {self.name} parameters: {', '.join(unknown)}")
        self.params = {
            key: _coerce(key, default, params[key]) if key in params else default
            for key, default in defaults.items()
        }
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for parameter values that make no sense together."""

    @property
    def warmup(self) -> int:
        """Prices needed per symbol before the rule can decide."""
        return 1

    def decide(self, market: Market, book: Book) -> Decision:
        raise NotImplementedError

    def decide_each(self, market: Market, book: Book, symbols, decide_one, *, idle: str):
        """``decide_one(market, book, symbol)`` for each symbol in turn, each seeing the book
        as the previous symbols' orders leave it; combined into one ``Decision``."""
        decisions = []
        for symbol in symbols:
            decision = decide_one(market, book, symbol)
            for intent in decision.orders:
                book = book.after(intent, market.price(intent.symbol) or ZERO)
            decisions.append(decision)
        return combine(decisions, idle=idle)

    def symbols(self, book: Book) -> list[str]:
        wanted = self.params["symbols"]
        if wanted is None:
            return list(book.symbols)
        return [s for s in wanted if s in book.symbols]

    # --- sizing --------------------------------------------------------------------------------

    def buy_quantity(self, symbol: str, price: Decimal, book: Book) -> tuple[Decimal, str]:
        """Whole shares to buy at ``price``, and how the size was chosen (0 when too small).

        ``order_fraction`` of the available cash, kept under the approval threshold, the
        position caps (this strategy's and the server's) and the cash; except every
        ``oversize_every``-th buy, sized just above the approval threshold when that fits.
        """
        if price <= 0:
            return ZERO, "no price"
        held_value = book.held.get(symbol, ZERO) * price
        pending_value = sum(
            (o.quantity * (o.limit_price or price) for o in book.open_for(symbol, "buy")), ZERO
        )
        cap = min(
            self.params["max_position_fraction"] * book.budget,
            book.max_position_value * POSITION_MARGIN,
        )
        room = cap - held_value - pending_value
        affordable = min(room, book.available_cash)
        every = self.params["oversize_every"]
        oversized = book.approval_threshold * OVER_THRESHOLD
        if (
            every
            and book.buys_placed % every == every - 1
            and not book.awaiting_approval
            and oversized <= affordable
        ):
            return _shares(oversized, price), "sized above the approval threshold"
        notional = min(
            book.available_cash * self.params["order_fraction"],
            book.approval_threshold * UNDER_THRESHOLD,
            affordable,
        )
        quantity = _shares(notional, price)
        if quantity <= 0:
            if room < price:
                return ZERO, f"position cap reached ({cap.quantize(CENT)})"
            return ZERO, "not enough available cash for one share"
        return quantity, f"{self.params['order_fraction']} of available cash"

    def sell_quantity(self, symbol: str, price: Decimal, book: Book) -> Decimal:
        """Shares to sell: what is held and not already offered, at most what keeps the
        order under the approval threshold (a large position is sold over several orders)."""
        sellable = book.sellable.get(symbol, ZERO)
        return min(sellable, _shares(book.approval_threshold * UNDER_THRESHOLD, price))


def _shares(notional: Decimal, price: Decimal) -> Decimal:
    if notional <= 0 or price <= 0:
        return ZERO
    return (notional / price).to_integral_value(rounding=ROUND_DOWN)


# --- statistics (Decimal, exact enough for decisions on cents) ---------------------------------


def mean(values: Sequence[Decimal]) -> Decimal:
    return sum(values, ZERO) / len(values)


def stdev(values: Sequence[Decimal]) -> Decimal:
    """Population standard deviation."""
    centre = mean(values)
    variance = sum(((v - centre) ** 2 for v in values), ZERO) / len(values)
    return variance.sqrt()


def log(value: Decimal) -> Decimal:
    return value.ln()
