"""Execution and release of an order: reservations (rule 4), fills (rule 6), the end of an
order without a fill, and the live events they publish."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from agents.models import Agent, Position
from agents.money import ZERO, cents, whole_dollars
from agents.representation import portfolio_representation
from agents.selectors import portfolio_valuation
from agents.services import BALANCE_FIELDS, DAILY_TRADE_FIELDS
from api import problems
from api.representation import quantity_text
from metering.services import server_transaction_id, usage_build, usage_record
from observability.metrics import TRADES
from realtime.services import AgentEvents, agent_events
from trades import market
from trades.choices import OPEN_STATUSES, OrderType, Side, TimeInForce, TradeStatus
from trades.models import Fill, Trade
from trades.representation import approval_request_id, trade_representation
from trades.services.locks import Locked, lock_for_trade
from trades.validation import LIMIT_TYPES, STOP_TYPES

TRADE_VOLUME = "trade_volume"

IMMEDIATE = (TimeInForce.IOC, TimeInForce.FOK)

RELEASE_STATUSES = (TradeStatus.CANCELLED, TradeStatus.REJECTED, TradeStatus.EXPIRED)

# The columns of a held position that an order changes.
POSITION_FIELDS = ["quantity", "reserved_quantity", "cost_basis", "updated_at"]


def _trade_data(trade: Trade, loaded: _Loaded | None = None) -> dict:
    """The Trade JSON of ``trade``, as the API shows it. An order being placed (``loaded``)
    has the approval request its submission opened, if any; any other was read with its
    approval request (``lock_rows``)."""
    known = loaded.approval_request_id if loaded is not None else approval_request_id(trade)
    return trade_representation(trade, approval_request_id=known)


def _publish_trade(
    trade: Trade, event: str, events: AgentEvents, loaded: _Loaded | None = None
) -> None:
    publish_trade_data(trade, event, _trade_data(trade, loaded), events)


def publish_trade_data(trade: Trade, event: str, data: dict, events: AgentEvents) -> None:
    """Publish a trade event and, once committed, count the status it reports.

    Every status change of an order goes through here, so ``trading_trades_total{status}``
    counts the orders that reached each status (a market order filled at once counts as
    ``open`` when accepted, then ``filled``).
    """
    events.publish(event=event, channel="trades", data=data)
    status = data.get("status")
    if status:
        transaction.on_commit(lambda: TRADES.labels(status).inc())


@dataclass
class _Loaded:
    """What a submission read under the agent lock, reused instead of read again: every
    position of the agent (locked) by symbol, the prices of their symbols and of the order's,
    and the usage rows to insert together at the end."""

    positions: dict[str, Position]
    prices: dict[str, Decimal]
    usage: list = field(default_factory=list)
    # The approval request the submission opened (none for an auto-approved order).
    approval_request_id: UUID | None = None
    # The order's Trade JSON as last published, when nothing about the order changed since
    # (a fill): the submission answers it instead of building it again.
    trade_data: dict | None = None


def _estimate_price(trade: Trade, price: Decimal) -> Decimal:
    """The price a buy is checked and reserved at: its limit, or the market for market/stop."""
    return trade.limit_price if trade.type in LIMIT_TYPES else price


def _save(
    *,
    agent: Agent,
    trade: Trade | None,
    position: Position | None,
    events: AgentEvents,
    save_agent: bool = True,
) -> None:
    """Write what an order changed: the trade (unless None: written already), the position
    (a new one only if it holds shares) and the agent's balances."""
    if trade is not None:
        trade.save()
    if position is not None and (position.pk is not None or position.quantity > 0):
        _save_position(position)
    if save_agent:
        _save_agent(agent, events)


def _save_agent(agent: Agent, events: AgentEvents) -> None:
    """Write the agent's balances, its count of the day's orders and the events' seq counter
    in one UPDATE, with the row locked. Every path that accepts an order (filled, resting,
    cancelled at once, rejected at execution, pending approval) saves the agent through here,
    so the count its submission made (``daily_trade_count``) is written with the order, at
    no statement of its own; any other caller writes back the count it read under the lock."""
    agent.save(update_fields=BALANCE_FIELDS + DAILY_TRADE_FIELDS + events.counter_fields(agent))


def _save_position(position: Position) -> None:
    """INSERT a first position, or UPDATE the columns an order changes."""
    if position.pk is None:
        position.save(force_insert=True)
    else:
        position.save(update_fields=POSITION_FIELDS)


def _reserve(
    *, agent: Agent, trade: Trade, price: Decimal, position: Position | None
) -> Position | None:
    """Check and reserve the cash of a buy or the shares of a sell (in memory; saved later).

    ``position`` is the agent's locked position in the symbol (None if it has none). Raises
    402 ``insufficient-funds``, 422 ``insufficient-position`` or 422 ``position-limit``.
    Returns the position, a new unsaved one for a first buy.
    """
    if trade.side == Side.SELL:
        free = position.quantity - position.reserved_quantity if position else ZERO
        if trade.quantity > free:
            raise problems.InsufficientPosition(
                f"Cannot sell {quantity_text(trade.quantity)} {trade.symbol}: "
                f"{quantity_text(free)} unreserved shares held.",
                requested=trade.quantity,
                available=free,
            )
        position.reserved_quantity += trade.quantity
        trade.reserved_quantity = trade.quantity
        return position

    required = trade.notional
    available = agent.available_cash
    if required > available:
        raise problems.InsufficientFunds(
            f"This order needs {required} but only {available} is available.",
            required=required,
            available=available,
        )
    limit = cents(agent.budget * Decimal(agent.effective_config["max_position_fraction"]))
    held_value = cents(position.quantity * price) if position else ZERO
    pending_buys = ZERO
    if agent.reserved_cash > 0:
        pending_buys = (
            Trade.objects.filter(
                agent=agent, symbol=trade.symbol, side=Side.BUY, status__in=OPEN_STATUSES
            ).aggregate(total=Sum("reserved_amount"))["total"]
            or ZERO
        )
    exposure = held_value + pending_buys + required
    if exposure > limit:
        raise problems.PositionLimit(
            f"{trade.symbol} would reach {exposure}, above this agent's position limit of "
            f"{limit} (max_position_fraction of the budget).",
            limit=limit,
            position_value=exposure,
        )
    agent.reserved_cash += required
    trade.reserved_amount = required
    return position or Position(agent=agent, symbol=trade.symbol)


def _fill_price(trade: Trade, price: Decimal) -> Decimal | None:
    """The price ``trade`` executes at if the market is at ``price`` now, else None.

    A stop (or stop-limit) order is triggered once the market reaches its stop price (buy:
    at or above, sell: at or below); this sets ``stop_triggered``. A limit fills at the better
    of the limit and the market.
    """
    if trade.type in STOP_TYPES and not trade.stop_triggered:
        reached = price >= trade.stop_price if trade.side == Side.BUY else price <= trade.stop_price
        if not reached:
            return None
        trade.stop_triggered = True
    if trade.type in (OrderType.MARKET, OrderType.STOP):
        return price
    if trade.side == Side.BUY:
        return min(price, trade.limit_price) if price <= trade.limit_price else None
    return max(price, trade.limit_price) if price >= trade.limit_price else None


def _fill(
    *,
    agent: Agent,
    trade: Trade,
    position: Position | None,
    price: Decimal,
    events: AgentEvents,
    loaded: _Loaded | None = None,
) -> Trade:
    """Execute the whole order at ``price``: cash, position, realized P&L, reservation, the
    fill row, ``trade_volume`` usage and the live events — all in the caller's transaction.
    A buy whose cost outgrew reservation plus free cash (a stop that triggered higher) is
    rejected instead.

    ``loaded`` (an order being submitted): the trade is not saved yet and is inserted
    already filled, ``trade.created`` is published before ``trade.filled``, the portfolio is
    valued from the rows the submission loaded, and the usage row joins ``loaded.usage``.
    """
    new = loaded is not None
    if new:
        opened = _trade_data(trade, loaded)
    now = timezone.now()
    position = position or Position(agent=agent, symbol=trade.symbol)
    price = cents(price)
    notional = cents(trade.quantity * price)
    realized = ZERO
    if trade.side == Side.BUY:
        spendable = agent.available_cash + trade.reserved_amount
        if notional > spendable:
            if new:
                _insert_new(trade, loaded, events)
            return _release(
                agent=agent,
                trade=trade,
                position=position,
                status=TradeStatus.REJECTED,
                reason=f"Insufficient funds at execution: required {notional}, "
                f"available {spendable}.",
                loaded=loaded,
                events=events,
            )
        agent.reserved_cash -= trade.reserved_amount
        trade.reserved_amount = ZERO
        agent.cash_balance -= notional
        position.quantity += trade.quantity
        position.cost_basis += notional
    else:
        position.reserved_quantity -= trade.reserved_quantity
        trade.reserved_quantity = ZERO
        if trade.quantity == position.quantity:
            cost = position.cost_basis
        else:
            cost = cents(position.cost_basis * trade.quantity / position.quantity)
        position.quantity -= trade.quantity
        position.cost_basis -= cost
        realized = notional - cost
        agent.cash_balance += notional
        agent.realized_pnl += realized
    agent.last_active_at = now
    trade.status = TradeStatus.FILLED
    trade.filled_quantity = trade.quantity
    trade.avg_fill_price = price
    trade.notional = notional
    trade.filled_at = now
    # The agent row is written last, after the events took their seqs (one UPDATE for both).
    _save(agent=agent, trade=trade, position=position, events=events, save_agent=False)
    fill = Fill(
        trade=trade, quantity=trade.quantity, price=price, notional=notional, realized_pnl=realized
    )
    fill.save(force_insert=True)
    volume = {
        "agent": agent,
        "code": TRADE_VOLUME,
        "quantity": whole_dollars(notional),
        "symbol": trade.symbol,
        "properties": {"trade_id": trade.pk, "side": trade.side},
        "transaction_id": server_transaction_id(TRADE_VOLUME, trade.pk),
    }
    if new:
        loaded.usage.append(usage_build(**volume))
        filled = _trade_data(trade, loaded)
        # The order as it was accepted, stamped with its creation (the row's first version).
        created = {**opened, "created_at": filled["created_at"], "updated_at": filled["created_at"]}
        publish_trade_data(trade, "trade.created", created, events)
        publish_trade_data(trade, "trade.filled", filled, events)
        loaded.trade_data = filled
        if position.pk is not None and position.symbol not in loaded.positions:
            loaded.positions[position.symbol] = position
        _publish_portfolio(
            agent, events, positions=list(loaded.positions.values()), prices=loaded.prices
        )
    else:
        usage_record(**volume)
        _publish_trade(trade, "trade.filled", events)
        _publish_portfolio(agent, events)
    _save_agent(agent, events)
    return trade


def _insert_new(trade: Trade, loaded: _Loaded, events: AgentEvents) -> None:
    """Insert a submitted order as accepted and publish ``trade.created`` (the paths where it
    does not fill at once)."""
    trade.save(force_insert=True)
    _publish_trade(trade, "trade.created", events, loaded)


def _publish_portfolio(
    agent: Agent,
    events: AgentEvents,
    *,
    positions: list[Position] | None = None,
    prices: dict[str, Decimal] | None = None,
) -> None:
    """Publish ``portfolio.update`` with the agent's valuation. (The portfolio history is
    snapshotted on market ticks, ``market_tick``, not per fill.)

    ``positions`` (all the agent's, current) and ``prices`` (covering their symbols) value it
    without a query; otherwise they are read."""
    if positions is None or prices is None:
        positions = list(agent.positions.filter(quantity__gt=0))
        prices = market.prices_for({position.symbol for position in positions})
    valuation = portfolio_valuation(agent=agent, positions=positions, prices=prices)
    events.publish(
        event="portfolio.update", channel="portfolio", data=portfolio_representation(valuation)
    )


def _release(
    *,
    agent: Agent,
    trade: Trade,
    position: Position | None,
    status: str,
    reason: str,
    events: AgentEvents,
    loaded: _Loaded | None = None,
) -> Trade:
    """End an unfilled order: give back its reserved cash or shares, set the final status and
    publish ``trade.cancelled`` (or ``trade.updated`` for rejected/expired), then
    ``portfolio.update`` when a reservation was given back. ``loaded``: see ``_fill`` (an order
    ended in its own submission reserved nothing that anyone saw, so no portfolio is sent)."""
    released = bool(trade.reserved_amount or trade.reserved_quantity)
    agent.reserved_cash -= trade.reserved_amount
    trade.reserved_amount = ZERO
    if trade.reserved_quantity:
        position.reserved_quantity -= trade.reserved_quantity
        trade.reserved_quantity = ZERO
    trade.status = status
    trade.rejection_reason = reason
    trade.cancelled_at = timezone.now()
    _save(agent=agent, trade=trade, position=position, events=events)
    event = "trade.cancelled" if status == TradeStatus.CANCELLED else "trade.updated"
    _publish_trade(trade, event, events, loaded)
    if released and loaded is None:
        _publish_portfolio(agent, events)
    return trade


def _execute(
    *,
    agent: Agent,
    trade: Trade,
    position: Position | None,
    price: Decimal,
    events: AgentEvents,
    loaded: _Loaded | None = None,
) -> Trade:
    """Rule 6 for an approved order: fill now, cancel an ioc/fok that cannot fill at once, or
    leave it resting ``open`` with its reservation. ``loaded``: see ``_fill``."""
    fill_price = _fill_price(trade, price)
    if fill_price is not None:
        return _fill(
            agent=agent,
            trade=trade,
            position=position,
            price=fill_price,
            events=events,
            loaded=loaded,
        )
    if loaded is not None:
        _insert_new(trade, loaded, events)
    if trade.time_in_force in IMMEDIATE:
        return _release(
            agent=agent,
            trade=trade,
            position=position,
            status=TradeStatus.CANCELLED,
            reason=f"{trade.time_in_force} order could not be filled immediately.",
            loaded=loaded,
            events=events,
        )
    # A new order resting open was just inserted as it is.
    _save(agent=agent, trade=trade if loaded is None else None, position=position, events=events)
    # It holds a reservation now (a new order), or one adjusted to the price at approval.
    _publish_loaded_portfolio(agent, position, loaded, events)
    return trade


def _publish_loaded_portfolio(
    agent: Agent, position: Position | None, loaded: _Loaded | None, events: AgentEvents
) -> None:
    """``portfolio.update`` after a reservation changed: from the rows a submission loaded
    (``loaded``), or read again."""
    if loaded is None:
        _publish_portfolio(agent, events)
        return
    positions = dict(loaded.positions)
    if position is not None and position.pk is not None:
        positions[position.symbol] = position
    _publish_portfolio(agent, events, positions=list(positions.values()), prices=loaded.prices)


def trade_execute_approved(*, trade: Trade) -> Trade:
    """Execute a ``pending_approval`` trade whose last approval just arrived, under its locks
    (``execute_approved``). 409 if the trade is not pending approval."""
    with transaction.atomic():
        rows = lock_for_trade(trade)
        with agent_events(rows.agent) as events:
            return execute_approved(rows, events)


def execute_approved(rows: Locked, events: AgentEvents) -> Trade:
    """Execute the approved order of ``rows`` (locked by ``lock_rows``), in the caller's
    transaction.

    A buy is re-checked at the current price: if reservation plus free cash no longer cover
    it, it becomes ``rejected`` with a ``rejection_reason`` and its reservation is released;
    otherwise the reservation is adjusted to the new estimate and the order fills, rests
    ``open`` or (ioc/fok) is cancelled, as at submission. 409 if the trade is not pending
    approval.
    """
    agent, position, trade = rows.agent, rows.position, rows.trade
    if trade.status != TradeStatus.PENDING_APPROVAL:
        raise problems.Conflict(f"The trade is {trade.status}, not pending approval.")
    now = timezone.now()
    price = market.current_price(trade.symbol)
    if trade.side == Side.BUY:
        required = cents(trade.quantity * _estimate_price(trade, price))
        available = agent.available_cash + trade.reserved_amount
        if required > available:
            return _release(
                agent=agent,
                trade=trade,
                position=position,
                status=TradeStatus.REJECTED,
                reason=f"Insufficient funds at approval: required {required}, "
                f"available {available}.",
                events=events,
            )
        agent.reserved_cash += required - trade.reserved_amount
        trade.reserved_amount = required
        trade.notional = required
        position = position or Position(agent=agent, symbol=trade.symbol)
    trade.status = TradeStatus.OPEN
    if trade.time_in_force == TimeInForce.DAY:
        # The order's trading day starts when it becomes live.
        trade.market_day = market.market_day(now)
    agent.last_active_at = now
    _execute(agent=agent, trade=trade, position=position, price=price, events=events)
    if trade.status == TradeStatus.OPEN:
        _publish_trade(trade, "trade.updated", events)
    return trade


def trade_release(*, trade: Trade, status: str, reason: str = "") -> Trade:
    """End an open or pending order without a fill, under its locks (``release``). 409 if
    the trade already ended. Does not touch its approval request."""
    with transaction.atomic():
        rows = lock_for_trade(trade)
        with agent_events(rows.agent) as events:
            return release(rows, events, status=status, reason=reason)


def release(rows: Locked, events: AgentEvents, *, status: str, reason: str = "") -> Trade:
    """End the open or pending order of ``rows`` (locked by ``lock_rows``) without a fill
    (``rejected``, ``expired`` or ``cancelled``): its reserved cash or shares return to the
    agent, ``cancelled_at`` is set, ``trade.cancelled``/``trade.updated`` is published. 409
    if the trade already ended."""
    if status not in RELEASE_STATUSES:
        raise ValueError(f"release cannot set status {status!r}")
    if rows.trade.status not in OPEN_STATUSES:
        raise problems.Conflict(f"The trade is already {rows.trade.status}.")
    return _release(
        agent=rows.agent,
        trade=rows.trade,
        position=rows.position,
        status=status,
        reason=reason,
        events=events,
    )
