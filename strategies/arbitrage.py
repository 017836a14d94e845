"""Arbitrage (pairs trading): trade the spread between two symbols that move together."""

from __future__ import annotations

from decimal import Decimal

from strategies.base import Book, Decision, Market, OrderIntent, Strategy, log, mean, stdev


class Arbitrage(Strategy):
    """Watch the spread ``ln(A) - ln(B)`` of a pair; when it is ``entry_z`` standard deviations
    above its ``window``-tick mean, A is rich against B: sell A (if held) and buy B. When it is
    as far below, buy A and sell B (if held). Agents cannot sell short, so a leg without shares
    to sell is left out.

    Parameters: ``pair`` (two symbols; default: the first two the agent may trade),
    ``window`` (30), ``entry_z`` (2.0), and the common sizing ones.
    """

    name = "arbitrage"
    DEFAULTS = {"pair": None, "window": 30, "entry_z": Decimal("2.0")}

    def validate(self) -> None:
        pair = self.params["pair"]
        if pair is not None and (len(pair) != 2 or pair[0] == pair[1]):
            raise ValueError("pair must be two different symbols")
        if self.params["window"] < 2:
            raise ValueError("arbitrage needs window >= 2")
        if self.params["entry_z"] <= 0:
            raise ValueError("entry_z must be positive")

    @property
    def warmup(self) -> int:
        return self.params["window"] + 1

    def pair(self, book: Book) -> tuple[str, str] | None:
        pair = self.params["pair"] or self.symbols(book)[:2]
        if len(pair) != 2 or any(s not in book.symbols for s in pair):
            return None
        return pair[0], pair[1]

    def decide(self, market: Market, book: Book) -> Decision:
        pair = self.pair(book)
        if pair is None:
            return Decision.hold("no tradable pair of symbols")
        a, b = pair
        prices_a = list(market.history.get(a, ()))
        prices_b = list(market.history.get(b, ()))
        length = min(len(prices_a), len(prices_b))
        if length < self.warmup:
            return Decision.hold(f"{a}/{b}: {length}/{self.warmup} prices")
        spreads = [
            log(pa) - log(pb)
            for pa, pb in zip(prices_a[-self.warmup :], prices_b[-self.warmup :], strict=True)
        ]
        history, now = spreads[:-1], spreads[-1]
        deviation = stdev(history)
        if deviation == 0:
            return Decision.hold(f"{a}/{b}: the spread does not move")
        z = (now - mean(history)) / deviation
        shown = z.quantize(Decimal("0.01"))
        if abs(z) < self.params["entry_z"]:
            return Decision.hold(f"{a}/{b}: spread z = {shown}, inside ±{self.params['entry_z']}")
        rich, cheap = (a, b) if z > 0 else (b, a)
        where = f"{a}/{b}: spread z = {shown}, {rich} rich against {cheap}"
        seq = max(market.seq(a), market.seq(b))
        signal = f"spread:{a}/{b}:{seq}"
        orders: list[OrderIntent] = []
        price = {a: prices_a[-1], b: prices_b[-1]}
        sellable = self.sell_quantity(rich, price[rich], book)
        if sellable > 0:
            orders.append(
                OrderIntent(rich, "sell", sellable, f"{signal}:sell", f"{where}: sell {rich}")
            )
        quantity, sizing = self.buy_quantity(cheap, price[cheap], book)
        if quantity > 0 and not book.open_for(cheap, "buy"):
            orders.append(
                OrderIntent(
                    cheap, "buy", quantity, f"{signal}:buy", f"{where}: buy {cheap} ({sizing})"
                )
            )
        if not orders:
            return Decision.hold(f"{where}, but nothing to sell and {sizing}")
        return Decision(reason="; ".join(o.reason for o in orders), orders=tuple(orders))
