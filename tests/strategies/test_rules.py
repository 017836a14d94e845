"""Each built-in strategy's rule on synthetic price series where the right decision is known.

The strategies are pure functions of a price history and a book: no server, no database.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from strategies import (
    Arbitrage,
    Book,
    Market,
    MarketMaking,
    MeanReversion,
    Momentum,
    OpenOrder,
    strategy_for,
)

D = Decimal
SYMBOLS = ("AAPL", "MSFT")


def book(**overrides) -> Book:
    values = {
        "budget": D("100000"),
        "available_cash": D("100000"),
        "held": {},
        "sellable": {},
        "open_orders": (),
        "approval_threshold": D("10000"),
        "max_position_value": D("30000"),
        "symbols": SYMBOLS,
        "buys_placed": 0,
    }
    values.update(overrides)
    if "held" in overrides and "sellable" not in overrides:
        values["sellable"] = overrides["held"]
    return Book(**values)


def market(seq: int = 1000, **series) -> Market:
    return Market(
        history={symbol: [D(str(p)) for p in prices] for symbol, prices in series.items()},
        last_seq=dict.fromkeys(series, seq),
    )


def order(id="o1", symbol="AAPL", side="buy", quantity="10", price="99.90", status="open"):
    return OpenOrder(id, symbol, side, "limit", D(quantity), D(price) if price else None, status)


# --- momentum ---------------------------------------------------------------------------------


def test_momentum_buys_when_the_short_average_crosses_above_the_long_one():
    # given: a flat price that starts rising at the last tick
    prices = [100] * 20 + [101]

    # when
    decision = Momentum().decide(market(AAPL=prices), book(symbols=("AAPL",)))

    # then: one market buy, sized at 5 % of the cash (5,000 / 101 → 49 shares)
    (placed,) = decision.orders
    assert (placed.symbol, placed.side, placed.type) == ("AAPL", "buy", "market")
    assert placed.quantity == D(49)
    assert placed.signal == "cross-up:AAPL:1000"
    assert "crossed above" in decision.reason


def test_momentum_acts_on_a_recent_cross_once_with_the_same_signal():
    prices = [100] * 20 + [101, 101.5, 102]
    first = Momentum().decide(market(AAPL=prices), book(symbols=("AAPL",)))
    # the cross happened two ticks ago: still a signal, named after the tick of the cross
    assert first.orders[0].signal == "cross-up:AAPL:998"
    # once the position is held, the same cross does not buy again
    again = Momentum().decide(market(AAPL=prices), book(symbols=("AAPL",), held={"AAPL": D(49)}))
    assert again.orders == ()


def test_momentum_holds_a_flat_market_and_a_steady_trend():
    assert not Momentum().decide(market(AAPL=[100] * 30), book()).acts
    steady = [100 + i for i in range(40)]  # short above long for a long time: no fresh cross
    decision = Momentum().decide(market(AAPL=steady), book(symbols=("AAPL",)))
    assert not decision.acts
    assert "no cross" in decision.reason


def test_momentum_sells_the_position_on_the_cross_down():
    prices = [100] * 20 + [99]
    decision = Momentum().decide(market(AAPL=prices), book(symbols=("AAPL",), held={"AAPL": D(30)}))
    (placed,) = decision.orders
    assert (placed.side, placed.quantity) == ("sell", D(30))
    # without shares there is nothing to sell
    assert not Momentum().decide(market(AAPL=prices), book(symbols=("AAPL",))).acts


def test_momentum_waits_for_enough_prices():
    decision = Momentum().decide(market(AAPL=[100] * 10 + [101]), book(symbols=("AAPL",)))
    assert not decision.acts
    assert "11/21 prices" in decision.reason


# --- mean reversion ---------------------------------------------------------------------------


def test_mean_reversion_buys_k_deviations_below_the_mean_and_sells_above():
    calm = [100, 101] * 10  # mean 100.5, deviation 0.5
    rule = MeanReversion({"k": "2"})

    low = rule.decide(market(AAPL=[*calm, 99]), book(symbols=("AAPL",)))  # 3 sd below
    (buy,) = low.orders
    assert (buy.side, buy.symbol) == ("buy", "AAPL")
    assert "3.0 sd below" in low.reason

    high = rule.decide(
        market(AAPL=[*calm, 102]), book(symbols=("AAPL",), held={"AAPL": D(7)})
    )  # 3 sd above, with shares
    (sell,) = high.orders
    assert (sell.side, sell.quantity) == ("sell", D(7))


def test_mean_reversion_holds_inside_the_band():
    calm = [100, 101] * 10
    decision = MeanReversion({"k": 2}).decide(
        market(AAPL=[*calm, 101]), book(symbols=("AAPL",), held={"AAPL": D(7)})
    )
    assert not decision.acts
    assert "inside" in decision.reason


# --- market making ----------------------------------------------------------------------------


def test_market_making_quotes_both_sides_of_a_held_symbol():
    decision = MarketMaking().decide(
        market(AAPL=[100]), book(symbols=("AAPL",), held={"AAPL": D(20)})
    )
    quotes = {o.side: o for o in decision.orders}
    assert quotes["buy"].type == quotes["sell"].type == "limit"
    assert quotes["buy"].limit_price == D("99.90")  # 0.1 % below
    assert quotes["sell"].limit_price == D("100.10")  # 0.1 % above
    assert quotes["sell"].quantity == D(20)  # no more than held
    # nothing held: only the bid
    (bid,) = MarketMaking().decide(market(AAPL=[100]), book(symbols=("AAPL",))).orders
    assert bid.side == "buy"


def test_market_making_requotes_the_side_that_filled_around_the_new_price():
    # given: both quotes rested around 100; the bid filled (gone), the price is now 99.80
    resting_ask = order("ask-1", side="sell", price="100.10", quantity="20")
    decision = MarketMaking().decide(
        market(AAPL=[100, 99.8]),
        book(
            symbols=("AAPL",),
            held={"AAPL": D(70)},
            open_orders=(resting_ask,),
            sellable={"AAPL": D(50)},
        ),
    )
    # then: a new bid around 99.80, and the ask (0.3 % away, within the drift) stays
    (bid,) = decision.orders
    assert (bid.side, bid.limit_price) == ("buy", D("99.70"))
    assert decision.cancels == ()


def test_market_making_cancels_a_quote_the_price_has_left():
    stale_bid = order("bid-1", side="buy", price="99.90")
    decision = MarketMaking().decide(
        market(AAPL=[100, 101]), book(symbols=("AAPL",), open_orders=(stale_bid,))
    )
    (cancel,) = decision.cancels
    assert cancel.order_id == "bid-1"
    assert "stale" in cancel.reason
    assert decision.orders == ()  # the new bid comes once the cancel is done


def test_market_making_leaves_a_quote_waiting_for_approval_alone():
    waiting = order("big", side="buy", price="90.00", status="pending_approval")
    decision = MarketMaking().decide(
        market(AAPL=[100]), book(symbols=("AAPL",), open_orders=(waiting,))
    )
    assert not decision.acts


# --- arbitrage --------------------------------------------------------------------------------


def test_arbitrage_sells_the_rich_leg_and_buys_the_cheap_one():
    # given: two symbols that moved together, then AAPL jumps 3 % alone
    a = [100 + (i % 3) for i in range(30)]
    b = [200 + 2 * (i % 3) for i in range(30)]
    a.append(a[-1] * 1.03)
    b.append(b[-1])

    decision = Arbitrage().decide(market(AAPL=a, MSFT=b), book(held={"AAPL": D(10)}))

    sides = {(o.symbol, o.side) for o in decision.orders}
    assert sides == {("AAPL", "sell"), ("MSFT", "buy")}
    assert "AAPL rich against MSFT" in decision.reason
    # the legs of one signal have distinct, deterministic signals
    assert len({o.signal for o in decision.orders}) == 2


def test_arbitrage_buys_the_cheap_leg_only_when_nothing_to_sell():
    a = [100 + (i % 3) for i in range(30)]
    b = [200 + 2 * (i % 3) for i in range(30)]
    a.append(a[-1] * 0.97)  # AAPL cheap: buy AAPL; MSFT is not held
    b.append(b[-1])
    (placed,) = Arbitrage().decide(market(AAPL=a, MSFT=b), book()).orders
    assert (placed.symbol, placed.side) == ("AAPL", "buy")


def test_arbitrage_holds_while_the_spread_is_normal():
    a = [100 + (i % 3) for i in range(31)]
    b = [200 + 2 * (i % 3) for i in range(31)]
    assert not Arbitrage().decide(market(AAPL=a, MSFT=b), book()).acts


# --- sizing and parameters --------------------------------------------------------------------


def test_orders_stay_under_the_approval_threshold_and_the_position_cap():
    rule = Momentum({"order_fraction": "0.5"})
    prices = [100] * 20 + [101]
    # half the cash would be 50,000: kept at 90 % of the 10,000 threshold → 89 shares
    (placed,) = rule.decide(market(AAPL=prices), book(symbols=("AAPL",))).orders
    assert placed.quantity == D(89)
    # a position near its cap (20 % of the budget: 20,000) leaves room for 22 shares at 99
    calm = [100, 101] * 10
    near_cap = book(symbols=("AAPL",), held={"AAPL": D(180)})
    (placed,) = (
        MeanReversion({"order_fraction": "0.5"}).decide(market(AAPL=[*calm, 99]), near_cap).orders
    )
    assert placed.quantity == D(22)  # (20,000 - 180 x 99) / 99, whole shares
    full = book(symbols=("AAPL",), held={"AAPL": D(205)})
    decision = MeanReversion().decide(market(AAPL=[*calm, 99]), full)
    assert not decision.acts
    assert "position cap reached" in decision.reason


def test_every_nth_buy_is_sized_above_the_approval_threshold():
    rule = Momentum({"oversize_every": 3})
    prices = [100] * 20 + [101]
    normal = rule.decide(market(AAPL=prices), book(symbols=("AAPL",), buys_placed=1)).orders[0]
    big = rule.decide(market(AAPL=prices), book(symbols=("AAPL",), buys_placed=2)).orders[0]
    assert normal.quantity * 101 < 10000 <= big.quantity * 101
    assert "above the approval threshold" in big.reason
    # not while another order already waits for approval
    waiting = order("w", symbol="MSFT", status="pending_approval")
    again = rule.decide(
        market(AAPL=prices), book(symbols=("AAPL",), buys_placed=2, open_orders=(waiting,))
    ).orders[0]
    assert again.quantity * 101 < 10000


def test_parameters_come_from_the_agent_config_over_defaults():
    rule = strategy_for("mean_reversion", {"window": 10, "k": "1.5"})
    assert rule.params["window"] == 10
    assert rule.params["k"] == D("1.5")
    assert rule.params["order_fraction"] == D("0.05")
    assert strategy_for("custom") is None
    with pytest.raises(ValueError, match="unknown momentum parameters: windw"):
        Momentum({"windw": 3})
    with pytest.raises(ValueError, match="short_window < long_window"):
        Momentum({"short_window": 30})
    with pytest.raises(ValueError, match="must be a number"):
        MeanReversion({"k": "lots"})


def test_a_large_position_is_sold_in_orders_under_the_approval_threshold():
    # 200 shares at 99 are 19,800: sold 90 at a time (under 90 % of the 10,000 threshold)
    prices = [100] * 20 + [99]
    decision = Momentum().decide(
        market(AAPL=prices), book(symbols=("AAPL",), held={"AAPL": D(200)})
    )
    (placed,) = decision.orders
    assert (placed.side, placed.quantity) == ("sell", D(90))


def test_one_decision_sizes_at_most_one_order_above_the_approval_threshold():
    # given: a market maker whose every buy may be oversized, quoting two symbols at once
    decision = MarketMaking({"oversize_every": 1}).decide(market(AAPL=[100], MSFT=[200]), book())

    # then: the first bid waits for approval, the second is of the usual size
    first, second = decision.orders
    assert first.quantity * first.limit_price >= 10000
    assert second.quantity * second.limit_price < 10000
