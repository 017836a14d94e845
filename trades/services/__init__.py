"""The order workflow: every write on an order, from submission to its end.

Submission (rules 1-7 of SPEC §5, ``submission``), execution and release (``execution``),
an operator's decision, the oversight service's outcome and the expiry of approval requests
(``approvals``), cancellation and the kill switch (``cancellation``), matching on market
ticks (``matching``), expiry of day orders (``expiry``) and the reconciliation of
reservations (``reconcile``), all under the row locks of ``locks.lock_rows``. ``oversight``
records decisions and returns outcomes; ``agents`` keeps the account ledger; neither calls
back here.

Guarantees kept by every function here:

- Locks are taken in one order, by ``lock_rows`` only: the agent row, then its position
  rows, then the trade rows, then their approval requests. Every balance change holds the
  agent lock, so concurrent operations of one agent are serialised and can never spend the
  same cash twice.
- ``cash_balance + Σ position.cost_basis == budget + realized_pnl`` exactly (cents, half up),
  and ``reserved_cash`` is the sum of the open and pending buys' ``reserved_amount``.
- Everything an operation does — rows, reservations, usage events, live events — commits or
  rolls back together. No gRPC call is made while a row lock is held: a new order asks the
  metering and oversight services first and re-validates under the agent lock (``_submit``),
  so a dependency that fails leaves nothing behind and a slow one delays only that order.
"""

from trades.services.approvals import (
    ExpiryReport,
    approval_decide,
    approval_follow_service,
    approvals_expire_due,
    approvals_expire_report,
)
from trades.services.cancellation import agent_terminate, trade_cancel
from trades.services.execution import (
    TRADE_VOLUME,
    publish_trade_data,
    trade_execute_approved,
    trade_release,
)
from trades.services.expiry import orders_expire_day
from trades.services.matching import market_tick, orders_match, portfolio_snapshots_take
from trades.services.reconcile import ReconcileReport, reservations_reconcile
from trades.services.submission import (
    TRADE_EXECUTIONS,
    SubmitOutcome,
    daily_trade_count,
    trade_submit,
)

__all__ = [
    "TRADE_EXECUTIONS",
    "TRADE_VOLUME",
    "ExpiryReport",
    "ReconcileReport",
    "SubmitOutcome",
    "agent_terminate",
    "approval_decide",
    "approval_follow_service",
    "approvals_expire_due",
    "approvals_expire_report",
    "daily_trade_count",
    "market_tick",
    "orders_expire_day",
    "orders_match",
    "portfolio_snapshots_take",
    "publish_trade_data",
    "reservations_reconcile",
    "trade_cancel",
    "trade_execute_approved",
    "trade_release",
    "trade_submit",
]
