"""Market making: rest a bid below and an ask above the price, and re-quote as it moves."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_UP, Decimal

from strategies.base import (
    CENT,
    UNDER_THRESHOLD,
    Book,
    Cancel,
    Decision,
    Market,
    OrderIntent,
    Strategy,
)


class MarketMaking(Strategy):
    """Quote both sides of up to ``quote_symbols`` symbols (those held first): a limit buy
    ``spread``/2 below the current price and, when shares are held, a limit sell ``spread``/2
    above it. A quote that fills is replaced at the next decision, around the new price (the
    re-quote on a fill); a quote that the price has left by more than ``requote_drift`` is
    cancelled and then replaced. The earnings are the spread between fills on both sides.

    Parameters: ``spread`` (0.002, i.e. 0.2 %), ``requote_drift`` (0.004), ``quote_symbols``
    (2), and the common sizing ones (a sell quote offers as many shares as a buy would buy,
    at most those held).
    """

    name = "market_making"
    DEFAULTS = {"spread": Decimal("0.002"), "requote_drift": Decimal("0.004"), "quote_symbols": 2}

    def validate(self) -> None:
        if not 0 < self.params["spread"] < 1:
            raise ValueError("spread must be between 0 and 1")
        if self.params["quote_symbols"] < 1:
            raise ValueError("quote_symbols must be at least 1")

    def quoted_symbols(self, book: Book) -> list[str]:
        candidates = self.symbols(book)
        held = [s for s in candidates if book.held.get(s)]
        rest = [s for s in candidates if s not in held]
        return (held + rest)[: self.params["quote_symbols"]]

    def quotes(self, price: Decimal) -> tuple[Decimal, Decimal]:
        """The bid and ask around ``price``, whole cents, never crossing it."""
        half = self.params["spread"] / 2
        bid = (price * (1 - half)).quantize(CENT, rounding=ROUND_DOWN)
        ask = (price * (1 + half)).quantize(CENT, rounding=ROUND_UP)
        return min(bid, price - CENT), max(ask, price + CENT)

    def decide(self, market: Market, book: Book) -> Decision:
        return self.decide_each(
            market, book, self.quoted_symbols(book), self._decide_symbol, idle="quotes in place"
        )

    def _decide_symbol(self, market: Market, book: Book, symbol: str) -> Decision:
        price = market.price(symbol)
        if price is None:
            return Decision.hold(f"{symbol}: no price yet")
        bid, ask = self.quotes(price)
        seq = market.seq(symbol)
        orders: list[OrderIntent] = []
        cancels: list[Cancel] = []
        reasons: list[str] = []
        for side, target in (("buy", bid), ("sell", ask)):
            resting = [o for o in book.open_for(symbol, side) if o.status == "open"]
            stale = [
                o
                for o in resting
                if o.limit_price is None
                or abs(o.limit_price - target) / price > self.params["requote_drift"]
            ]
            for order in stale:
                why = f"{symbol} {side} quote {order.limit_price} is stale at price {price}"
                cancels.append(Cancel(order.id, why))
                reasons.append(why)
            if resting or book.open_for(symbol, side):
                continue  # a quote rests (or waits for approval) on this side
            quantity, _ = self.buy_quantity(symbol, price, book)
            if side == "sell":
                # As many shares as a buy quote of the usual size, whatever the position cap.
                usual = min(
                    book.budget * self.params["order_fraction"],
                    book.approval_threshold * UNDER_THRESHOLD,
                )
                quantity = min(
                    self.sell_quantity(symbol, price, book),
                    max((usual / price).to_integral_value(rounding=ROUND_DOWN), Decimal(1)),
                )
            if quantity <= 0:
                continue
            reason = (
                f"{symbol}: quote {side} {quantity} @ {target} around {price} "
                f"(spread {self.params['spread']})"
            )
            orders.append(
                OrderIntent(
                    symbol,
                    side,
                    quantity,
                    f"{'bid' if side == 'buy' else 'ask'}:{symbol}:{seq}",
                    reason,
                    type="limit",
                    limit_price=target,
                )
            )
            reasons.append(reason)
        if not orders and not cancels:
            return Decision.hold(f"{symbol}: quotes in place around {price}")
        return Decision(reason="; ".join(reasons), orders=tuple(orders), cancels=tuple(cancels))
