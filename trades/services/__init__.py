"""The order workflow: every write on an order, from submission to its end.

Submission (rules 1-7 of SPEC §5, ``submission``), execution and release (``execution``),
cancellation (``cancellation``), matching on market ticks (``matching``), expiry of day
orders (``expiry``), all under the row locks of ``locks``.

Guarantees kept by every function here:

- Locks are taken in one order: the agent row, then its position row, then the trade row
  (then, in oversight, the approval request). Every balance change holds the agent lock, so
  concurrent orders of one agent are serialised and can never spend the same cash twice.
- ``cash_balance + Σ position.cost_basis == budget + realized_pnl`` exactly (cents, half up),
  and ``reserved_cash`` is the sum of the open and pending buys' ``reserved_amount``.
- Everything an operation does — rows, reservations, usage events, live events — commits or
  rolls back together. No gRPC call is made while a row lock is held: a new order asks the
  metering and oversight services first and re-validates under the agent lock (``_submit``),
  so a dependency that fails leaves nothing behind and a slow one delays only that order.
"""

from trades.services.cancellation import trade_cancel
from trades.services.execution import (
    TRADE_VOLUME,
    publish_trade_data,
    trade_execute_approved,
    trade_release,
)
from trades.services.expiry import orders_expire_day
from trades.services.matching import market_tick, orders_match
from trades.services.submission import (
    TRADE_EXECUTIONS,
    SubmitOutcome,
    daily_trade_limit_check,
    trade_submit,
)

__all__ = [
    "TRADE_EXECUTIONS",
    "TRADE_VOLUME",
    "SubmitOutcome",
    "daily_trade_limit_check",
    "market_tick",
    "orders_expire_day",
    "orders_match",
    "publish_trade_data",
    "trade_cancel",
    "trade_execute_approved",
    "trade_release",
    "trade_submit",
]
