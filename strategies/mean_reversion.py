"""Mean reversion: bet that a price far from its recent mean comes back."""

from __future__ import annotations

from decimal import Decimal

from strategies.base import (
    CENT,
    Book,
    Decision,
    Market,
    OrderIntent,
    Strategy,
    mean,
    stdev,
)


class MeanReversion(Strategy):
    """Buy when the price is ``k`` standard deviations below its ``window``-tick mean; sell the
    position when it is ``k`` above (or, with ``exit_at_mean``, once it is back at the mean).

    The band is measured over the ``window`` prices before the current one, so one outlier
    does not widen its own band. Parameters: ``window`` (20), ``k`` (2.0), ``exit_at_mean``
    (false), and the common sizing ones.
    """

    name = "mean_reversion"
    DEFAULTS = {"window": 20, "k": Decimal("2.0"), "exit_at_mean": False}

    def validate(self) -> None:
        if self.params["window"] < 2:
            raise ValueError("mean_reversion needs window >= 2")
        if self.params["k"] <= 0:
            raise ValueError("k must be positive")

    @property
    def warmup(self) -> int:
        return self.params["window"] + 1

    def decide(self, market: Market, book: Book) -> Decision:
        return self.decide_each(
            market,
            book,
            self.symbols(book),
            self._decide_symbol,
            idle="every price within its band",
        )

    def _decide_symbol(self, market: Market, book: Book, symbol: str) -> Decision:
        prices = list(market.history.get(symbol, ()))
        if len(prices) < self.warmup:
            return Decision.hold(f"{symbol}: {len(prices)}/{self.warmup} prices")
        window = prices[-self.warmup : -1]
        centre, spread = mean(window), stdev(window)
        price = prices[-1]
        if spread == 0:
            return Decision.hold(f"{symbol}: flat prices")
        z = (price - centre) / spread
        where = (
            f"{symbol} {price} is {abs(z).quantize(Decimal('0.1'))} sd "
            f"{'below' if z < 0 else 'above'} its {self.params['window']}-tick mean "
            f"{centre.quantize(CENT)}"
        )
        signal_at = market.seq(symbol)
        k = self.params["k"]
        if z <= -k:
            quantity, sizing = self.buy_quantity(symbol, price, book)
            if quantity <= 0:
                return Decision.hold(f"{where}, but {sizing}")
            reason = f"{where}: buy ({sizing})"
            return Decision(
                reason=reason,
                orders=(
                    OrderIntent(symbol, "buy", quantity, f"below:{symbol}:{signal_at}", reason),
                ),
            )
        sellable = self.sell_quantity(symbol, price, book)
        exit_now = z >= k or (self.params["exit_at_mean"] and z >= 0)
        if exit_now and sellable > 0:
            reason = f"{where}: sell"
            return Decision(
                reason=reason,
                orders=(
                    OrderIntent(symbol, "sell", sellable, f"above:{symbol}:{signal_at}", reason),
                ),
            )
        return Decision.hold(
            f"{where}, inside ±{k} sd" if abs(z) < k else f"{where}, nothing to do"
        )
