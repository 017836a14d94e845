"""Momentum: follow a trend when a short moving average crosses a long one."""

from __future__ import annotations

from decimal import Decimal

from strategies.base import CENT, Book, Decision, Market, OrderIntent, Strategy, mean


class Momentum(Strategy):
    """Buy when the short moving average crosses above the long one; sell the position when it
    crosses back below.

    A cross counts for ``signal_ticks`` ticks after it happens (a runner that was busy at the
    tick itself still acts on it), but only once: after the buy the position is no longer flat
    and after the sell there is nothing left to sell. Parameters: ``short_window`` (5),
    ``long_window`` (20), ``signal_ticks`` (5), and the common sizing ones.
    """

    name = "momentum"
    DEFAULTS = {"short_window": 5, "long_window": 20, "signal_ticks": 5}

    def validate(self) -> None:
        if not 1 <= self.params["short_window"] < self.params["long_window"]:
            raise ValueError("momentum needs 1 <= short_window < long_window")
        if self.params["signal_ticks"] < 1:
            raise ValueError("signal_ticks must be at least 1")

    @property
    def warmup(self) -> int:
        return self.params["long_window"] + 1

    def decide(self, market: Market, book: Book) -> Decision:
        return self.decide_each(
            market,
            book,
            self.symbols(book),
            self._decide_symbol,
            idle="no fresh moving-average cross",
        )

    def _averages(self, prices, end: int) -> tuple[Decimal, Decimal]:
        short, long = self.params["short_window"], self.params["long_window"]
        return mean(prices[end - short : end]), mean(prices[end - long : end])

    def last_cross(self, prices) -> tuple[str, int] | None:
        """The most recent cross within ``signal_ticks``: (``up``/``down``, ticks ago)."""
        long = self.params["long_window"]
        for ago in range(self.params["signal_ticks"]):
            end = len(prices) - ago
            if end - 1 < long:
                break
            short_now, long_now = self._averages(prices, end)
            short_before, long_before = self._averages(prices, end - 1)
            if short_before <= long_before and short_now > long_now:
                return "up", ago
            if short_before >= long_before and short_now < long_now:
                return "down", ago
        return None

    def _decide_symbol(self, market: Market, book: Book, symbol: str) -> Decision:
        prices = list(market.history.get(symbol, ()))
        if len(prices) < self.warmup:
            return Decision.hold(f"{symbol}: {len(prices)}/{self.warmup} prices")
        short_now, long_now = self._averages(prices, len(prices))
        averages = f"short MA {short_now.quantize(CENT)} vs long MA {long_now.quantize(CENT)}"
        cross = self.last_cross(prices)
        if cross is None:
            return Decision.hold(f"{symbol}: {averages}, no cross")
        direction, ago = cross
        at_seq = market.seq(symbol) - ago
        price = prices[-1]
        if direction == "up":
            if book.held.get(symbol) or book.open_for(symbol, "buy"):
                return Decision.hold(f"{symbol}: crossed up, already long")
            quantity, sizing = self.buy_quantity(symbol, price, book)
            if quantity <= 0:
                return Decision.hold(f"{symbol}: crossed up but {sizing}")
            reason = f"{symbol}: {averages}, short crossed above long ({sizing})"
            return Decision(
                reason=reason,
                orders=(
                    OrderIntent(symbol, "buy", quantity, f"cross-up:{symbol}:{at_seq}", reason),
                ),
            )
        sellable = self.sell_quantity(symbol, price, book)
        if sellable <= 0:
            return Decision.hold(f"{symbol}: crossed down, nothing to sell")
        reason = f"{symbol}: {averages}, short crossed below long: sell"
        return Decision(
            reason=reason,
            orders=(
                OrderIntent(symbol, "sell", sellable, f"cross-down:{symbol}:{at_seq}", reason),
            ),
        )
