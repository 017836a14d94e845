"""Built-in trading strategies: pure decision rules over a price history and a portfolio.

A strategy is a class with a ``name`` and a ``decide(market, book)`` method returning a
``Decision`` (orders to place, resting orders to cancel, and the reason). It reads nothing but
its arguments and its parameters, so it is tested on synthetic price series and runs in any
client: this package imports no part of the server. ``agent_runner`` drives it against a
server over the public REST API and WebSocket.

``STRATEGIES`` maps the server's ``strategy`` names to the classes; ``strategy_for(name,
params)`` builds one from an agent's ``config["strategy_params"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strategies.arbitrage import Arbitrage
from strategies.base import Book, Cancel, Decision, Market, OpenOrder, OrderIntent, Strategy
from strategies.market_making import MarketMaking
from strategies.mean_reversion import MeanReversion
from strategies.momentum import Momentum

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Momentum, MeanReversion, MarketMaking, Arbitrage)
}


def strategy_for(name: str, params: Mapping[str, Any] | None = None) -> Strategy | None:
    """The strategy called ``name`` with ``params`` over its defaults; None for an unknown name
    (``custom`` agents are driven by their owners' own programs)."""
    cls = STRATEGIES.get(name)
    return None if cls is None else cls(params or {})


__all__ = [
    "STRATEGIES",
    "Arbitrage",
    "Book",
    "Cancel",
    "Decision",
    "Market",
    "MarketMaking",
    "MeanReversion",
    "Momentum",
    "OpenOrder",
    "OrderIntent",
    "Strategy",
    "strategy_for",
]
