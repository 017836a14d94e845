"""Writes on orders: submission (rules 1-7 of SPEC §5), execution, cancellation, matching.

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

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from agents.choices import AgentStatus
from agents.models import Agent, Position
from agents.money import ZERO, cents, whole_dollars
from agents.selectors import agent_get_for
from agents.services import BALANCE_FIELDS
from api import problems
from api.bounds import MAX_NOTIONAL
from api.representation import quantity_text
from grpc_clients.registry import deadline_budget
from metering.periods import DAILY, period_window
from observability.metrics import TRADES, background_row_failed
from trades import market
from trades.choices import OPEN_STATUSES, OrderType, Side, TimeInForce, TradeStatus
from trades.models import Fill, IdempotencyRecord, Trade
from trades.representation import approval_request_id, trade_representation
from trades.validation import LIMIT_TYPES, STOP_TYPES, Order, order_validate

logger = logging.getLogger("trading_demo.trades")

TRADE_EXECUTIONS = "trade_executions"
TRADE_VOLUME = "trade_volume"
IMMEDIATE = (TimeInForce.IOC, TimeInForce.FOK)
RELEASE_STATUSES = (TradeStatus.CANCELLED, TradeStatus.REJECTED, TradeStatus.EXPIRED)
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# The columns of a held position that an order changes.
POSITION_FIELDS = ["quantity", "reserved_quantity", "cost_basis", "updated_at"]


@dataclass(frozen=True)
class SubmitOutcome:
    """What ``POST /agents/{id}/trades`` answers: status code, body, and whether it is a
    replay of an earlier answer to the same idempotency key."""

    status_code: int
    body: dict
    replayed: bool
    trade: Trade | None


# --- helpers -----------------------------------------------------------------------------------


def _plain(data) -> dict:
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _request_hash(data) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _trade_data(trade: Trade, loaded: _Loaded | None = None) -> dict:
    """The Trade JSON of ``trade``, as the API shows it. An order being placed (``loaded``)
    has the approval request its submission opened, if any; any other was read with its
    approval request (``_lock_for_trade``)."""
    known = loaded.approval_request_id if loaded is not None else approval_request_id(trade)
    return trade_representation(trade, approval_request_id=known)


def _publish_trade(trade: Trade, event: str, loaded: _Loaded | None = None) -> None:
    publish_trade_data(trade, event, _trade_data(trade, loaded))


def publish_trade_data(trade: Trade, event: str, data: dict) -> None:
    """Publish a trade event and, once committed, count the status it reports.

    Every status change of an order goes through here, so ``trading_trades_total{status}``
    counts the orders that reached each status (a market order filled at once counts as
    ``open`` when accepted, then ``filled``).
    """
    from realtime.services import publish_agent_event

    publish_agent_event(agent_id=trade.agent_id, event=event, channel="trades", data=data)
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


def _estimate_price(trade: Trade, price: Decimal) -> Decimal:
    """The price a buy is checked and reserved at: its limit, or the market for market/stop."""
    return trade.limit_price if trade.type in LIMIT_TYPES else price


def _lock_position(agent: Agent, symbol: str) -> Position | None:
    return Position.objects.select_for_update().filter(agent=agent, symbol=symbol).first()


def _lock_for_trade(trade: Trade) -> tuple[Agent, Position | None, Trade]:
    """Lock agent, position and trade in the global lock order; return fresh rows. The trade
    comes with its approval request's id (not locked: oversight locks it after the trade)."""
    agent = Agent.objects.select_for_update().get(pk=trade.agent_id)
    position = _lock_position(agent, trade.symbol)
    trade = (
        Trade.objects.select_for_update(of=("self",))
        .select_related("approval_request")
        .get(pk=trade.pk)
    )
    trade.agent = agent
    return agent, position, trade


def _save(
    *, agent: Agent, trade: Trade | None, position: Position | None, save_agent: bool = True
) -> None:
    """Write what an order changed: the trade (unless None: written already), the position
    (a new one only if it holds shares) and the agent's balances."""
    if trade is not None:
        trade.save()
    if position is not None and (position.pk is not None or position.quantity > 0):
        _save_position(position)
    if save_agent:
        _save_agent(agent)


def _save_agent(agent: Agent) -> None:
    from realtime.services import event_seq_fields

    # In an events batch the seq counter is written with the balances (one UPDATE).
    agent.save(update_fields=BALANCE_FIELDS + event_seq_fields(agent))


def _save_position(position: Position) -> None:
    """INSERT a first position, or UPDATE the columns an order changes."""
    if position.pk is None:
        position.save(force_insert=True)
    else:
        position.save(update_fields=POSITION_FIELDS)


# --- rule 4: reservations ----------------------------------------------------------------------


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


# --- rule 6: execution -------------------------------------------------------------------------


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
    from metering.services import server_transaction_id, usage_build, usage_record

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
                _insert_new(trade, loaded)
            return _release(
                agent=agent,
                trade=trade,
                position=position,
                status=TradeStatus.REJECTED,
                reason=f"Insufficient funds at execution: required {notional}, "
                f"available {spendable}.",
                loaded=loaded,
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
    _save(agent=agent, trade=trade, position=position, save_agent=False)
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
        publish_trade_data(trade, "trade.created", created)
        publish_trade_data(trade, "trade.filled", filled)
        if position.pk is not None and position.symbol not in loaded.positions:
            loaded.positions[position.symbol] = position
        _publish_portfolio(agent, positions=list(loaded.positions.values()), prices=loaded.prices)
    else:
        usage_record(**volume)
        _publish_trade(trade, "trade.filled")
        _publish_portfolio(agent)
    _save_agent(agent)
    return trade


def _insert_new(trade: Trade, loaded: _Loaded) -> None:
    """Insert a submitted order as accepted and publish ``trade.created`` (the paths where it
    does not fill at once)."""
    trade.save(force_insert=True)
    _publish_trade(trade, "trade.created", loaded)


def _publish_portfolio(
    agent: Agent,
    *,
    positions: list[Position] | None = None,
    prices: dict[str, Decimal] | None = None,
) -> None:
    """Publish ``portfolio.update`` with the agent's valuation. (The portfolio history is
    snapshotted on market ticks, ``market_tick``, not per fill.)

    ``positions`` (all the agent's, current) and ``prices`` (covering their symbols) value it
    without a query; otherwise they are read."""
    from agents.representation import portfolio_representation
    from agents.selectors import portfolio_for, portfolio_valuation
    from realtime.services import publish_agent_event

    if positions is not None and prices is not None:
        valuation = portfolio_valuation(agent=agent, positions=positions, prices=prices)
    else:
        valuation = portfolio_for(agent)
    publish_agent_event(
        agent_id=agent.pk,
        event="portfolio.update",
        channel="portfolio",
        data=portfolio_representation(valuation),
    )


def _release(
    *,
    agent: Agent,
    trade: Trade,
    position: Position | None,
    status: str,
    reason: str,
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
    _save(agent=agent, trade=trade, position=position)
    event = "trade.cancelled" if status == TradeStatus.CANCELLED else "trade.updated"
    _publish_trade(trade, event, loaded)
    if released and loaded is None:
        _publish_portfolio(agent)
    return trade


def _execute(
    *,
    agent: Agent,
    trade: Trade,
    position: Position | None,
    price: Decimal,
    loaded: _Loaded | None = None,
) -> Trade:
    """Rule 6 for an approved order: fill now, cancel an ioc/fok that cannot fill at once, or
    leave it resting ``open`` with its reservation. ``loaded``: see ``_fill``."""
    fill_price = _fill_price(trade, price)
    if fill_price is not None:
        return _fill(agent=agent, trade=trade, position=position, price=fill_price, loaded=loaded)
    if loaded is not None:
        _insert_new(trade, loaded)
    if trade.time_in_force in IMMEDIATE:
        return _release(
            agent=agent,
            trade=trade,
            position=position,
            status=TradeStatus.CANCELLED,
            reason=f"{trade.time_in_force} order could not be filled immediately.",
            loaded=loaded,
        )
    # A new order resting open was just inserted as it is.
    _save(agent=agent, trade=trade if loaded is None else None, position=position)
    # It holds a reservation now (a new order), or one adjusted to the price at approval.
    _publish_loaded_portfolio(agent, position, loaded)
    return trade


def _publish_loaded_portfolio(
    agent: Agent, position: Position | None, loaded: _Loaded | None
) -> None:
    """``portfolio.update`` after a reservation changed: from the rows a submission loaded
    (``loaded``), or read again."""
    if loaded is None:
        _publish_portfolio(agent)
        return
    positions = dict(loaded.positions)
    if position is not None and position.pk is not None:
        positions[position.symbol] = position
    _publish_portfolio(agent, positions=list(positions.values()), prices=loaded.prices)


# --- submission --------------------------------------------------------------------------------


def _idempotency_key(header: str | None, data) -> str | None:
    key = (header or "").strip()
    if key:
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise problems.ValidationFailed(
                "Idempotency-Key is too long.",
                errors={"Idempotency-Key": [f"At most {MAX_IDEMPOTENCY_KEY_LENGTH} characters."]},
            )
        return key
    if isinstance(data, dict):
        # The same normalisation as the serializer's: a number is its string, spaces trimmed.
        client_order_id = data.get("client_order_id")
        if isinstance(client_order_id, str | int) and not isinstance(client_order_id, bool):
            return str(client_order_id).strip() or None
    return None


def _replay(record: IdempotencyRecord, request_hash: str) -> SubmitOutcome:
    if record.request_hash != request_hash:
        raise problems.IdempotencyConflict(
            "This idempotency key was already used with a different request body."
        )
    return SubmitOutcome(
        status_code=record.response_status,
        body=record.response_body,
        replayed=True,
        trade=record.trade,
    )


def trade_submit(
    *,
    agent_id,
    user,
    data,
    idempotency_key: str | None = None,
    api_call: dict | None = None,
) -> SubmitOutcome:
    """Place an order for the agent, applying the rules 1-7 of SPEC §5 in order.

    1 validation (400) → 2 agent active (409) → 3 the agent's ``daily_trade_limit``, counted
    here (``daily_trade_limit_check``), and the ``trade_executions`` quota (429) → 4 funds
    or shares reserved (402/422) → 5 oversight decision (auto-approve, or 202 with an approval
    request) → 6 execution → 7 the answer kept under the idempotency key (``Idempotency-Key``
    header, else ``client_order_id``). A key seen before answers the original status and body
    (``replayed``) if the body is the same and 409 ``idempotency-conflict`` otherwise, and
    creates nothing. A failure at any rule, or a dependency that is down (503), persists
    nothing. Every accepted order records one ``trade_executions`` usage event; another
    owner's agent is 404. ``api_call`` (``usage_build`` arguments of the request's
    ``api_calls`` event) is recorded with the order's usage when the order is accepted.
    """
    key = _idempotency_key(idempotency_key, data)
    request_hash = _request_hash(data)
    try:
        return _submit(
            agent_id=agent_id,
            user=user,
            data=data,
            key=key,
            request_hash=request_hash,
            api_call=api_call,
        )
    except IntegrityError:
        # Backstop: a concurrent request with the same key committed first (possible when the
        # agent lock is not a real lock, e.g. across databases); answer as its replay.
        if not key:
            raise
        record = IdempotencyRecord.objects.filter(agent_id=agent_id, key=key).first()
        if record is not None:
            return _replay(record, request_hash)
        if Trade.objects.filter(agent_id=agent_id, client_order_id=key).exists():
            raise problems.IdempotencyConflict("This client_order_id was already used.") from None
        raise


@dataclass(frozen=True)
class _Prepared:
    """What a submission learnt before taking the agent's lock: the validated order, the
    price it is decided and executed at, the metering service's quota answer and the oversight
    service's decision."""

    order: Order
    price: Decimal
    prices: dict[str, Decimal]
    quota: object
    evaluation: object


def _submit(
    *, agent_id, user, data, key: str | None, request_hash: str, api_call: dict | None
) -> SubmitOutcome:
    """Ask the dependencies first, without any lock, then decide under the agent's lock.

    The network calls (``CheckQuota``, ``SubmitRequest``) run before the locked section, so a
    slow dependency delays only the orders that need it: the agent's other operations (a
    cancellation, an approval, the kill switch, the matcher) never wait behind a network call.
    The locked section then re-validates everything the calls were made on (replay, agent
    status, client order id, funds or shares, position limit) against the locked rows. If it
    refuses the order, or answers a replay, an oversight request submitted for it that is
    waiting for a human is closed on the service (``oversight_request_close``), so none stays
    pending there for an order the server never kept.
    """
    from realtime.services import agent_events_batch

    prepared = _prepare(agent_id=agent_id, user=user, data=data, key=key, request_hash=request_hash)
    if isinstance(prepared, SubmitOutcome):
        return prepared
    kept = False
    try:
        with transaction.atomic():
            agent = agent_get_for(user=user, agent_id=agent_id, lock=True)
            with agent_events_batch(agent=agent):
                outcome = _submit_locked(
                    agent=agent,
                    prepared=prepared,
                    key=key,
                    request_hash=request_hash,
                    api_call=api_call,
                )
        kept = not outcome.replayed
        return outcome
    finally:
        if not kept and not prepared.evaluation.auto_approved:
            _drop_oversight_request(prepared.evaluation.request_id)


def _drop_oversight_request(request_id) -> None:
    from oversight.services import oversight_request_close

    with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
        oversight_request_close(request_id, reason="order not placed")


def _prepare(
    *, agent_id, user, data, key: str | None, request_hash: str
) -> SubmitOutcome | _Prepared:
    """Rules 1-5 on rows read without a lock: a replay answers at once; an order that fails
    a rule answers its problem before any later rule's call; the quota and the oversight
    decision are asked here, outside any transaction."""
    from metering.services import quota_check
    from oversight.services import approval_evaluate

    agent = agent_get_for(user=user, agent_id=agent_id)
    if key:
        record = IdempotencyRecord.objects.filter(agent=agent, key=key).first()
        if record is not None:
            return _replay(record, request_hash)
    # 1. validation
    order = order_validate(agent=agent, data=data)
    # 2. agent active (and the client order id unused)
    _check_can_place(agent=agent, order=order)
    # One deadline for the order's gRPC calls together (quota, then oversight): a slow
    # dependency makes the order answer 503 within GRPC_TIMEOUT_SECONDS, not twice that.
    with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
        # 3. quota: the metering service's limits (the agent's own daily limit is counted
        # under the lock, where it is exact)
        quota = quota_check(agent=agent, metric_code=TRADE_EXECUTIONS, quantity=1, warn=False)
        # 4. funds / position, on the rows as read (checked again under the lock)
        positions = {p.symbol: p for p in Position.objects.filter(agent=agent)}
        prices = market.prices_for({order.symbol, *positions})
        price = prices[order.symbol]
        trade = _new_trade(agent=agent, order=order, price=price, now=timezone.now())
        held = positions.get(order.symbol)
        try:
            _reserve(agent=agent, trade=trade, price=price, position=held)
        except (problems.InsufficientFunds, problems.InsufficientPosition, problems.PositionLimit):
            # The agent and its positions were read by separate statements, so a fill
            # committed between them can make them disagree: a refusal is given only as the
            # locked rows decide it.
            _reserve_on_locked_rows(agent_id=agent.pk, order=order, price=price)
        # 5. oversight
        evaluation = approval_evaluate(
            agent=agent,
            trade=trade,
            notional=trade.notional,
            held_value=held.cost_basis if held is not None else ZERO,
        )
    return _Prepared(order=order, price=price, prices=prices, quota=quota, evaluation=evaluation)


def _reserve_on_locked_rows(*, agent_id, order: Order, price: Decimal) -> None:
    """Check the funds or shares of ``order`` on the agent's and position's locked rows;
    raises the same problems as ``_reserve``. Nothing is saved: the reservation itself is
    made by the locked submission."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        held = _lock_position(agent, order.symbol)
        trade = _new_trade(agent=agent, order=order, price=price, now=timezone.now())
        _reserve(agent=agent, trade=trade, price=price, position=held)


def _check_can_place(*, agent: Agent, order: Order) -> None:
    if agent.status != AgentStatus.ACTIVE:
        raise problems.AgentNotActive(
            f"The agent is {agent.status}; only active agents can trade.",
            agent_status=agent.status,
        )
    # No record under this key, yet the client_order_id names an order: it was placed
    # under another Idempotency-Key. Never a second order with the same client id.
    if (
        order.client_order_id
        and Trade.objects.filter(agent=agent, client_order_id=order.client_order_id).exists()
    ):
        raise problems.IdempotencyConflict("This client_order_id was already used.")


def _submit_locked(
    *,
    agent: Agent,
    prepared: _Prepared,
    key: str | None,
    request_hash: str,
    api_call: dict | None,
) -> SubmitOutcome:
    """Rules 2, 4 and 6-7 with the agent row locked, on what ``_prepare`` obtained. The rows
    needed twice (positions, prices) are read once; usage rows go in one INSERT at the end;
    live events in one (``agent_events_batch``)."""
    from metering.services import (
        quota_warn,
        server_transaction_id,
        usage_build,
        usage_bulk_record,
    )
    from oversight.services import approval_request_open

    if key:
        record = IdempotencyRecord.objects.filter(agent=agent, key=key).first()
        if record is not None:
            return _replay(record, request_hash)
    order, price, evaluation = prepared.order, prepared.price, prepared.evaluation
    # 2. again: the kill switch or another order may have come first
    _check_can_place(agent=agent, order=order)
    # 3. the agent's own daily limit, counted exactly here under its lock
    daily_trade_limit_check(agent=agent, now=timezone.now())
    quota_warn(agent=agent, metric_code=TRADE_EXECUTIONS, decision=prepared.quota, quantity=1)
    # 4. funds / position, on the locked rows, at the price the order was decided at
    now = timezone.now()
    positions = {p.symbol: p for p in Position.objects.select_for_update().filter(agent=agent)}
    # The prices the order was decided at; a symbol bought meanwhile is read now.
    prices = {**prepared.prices, **market.prices_for(positions.keys() - prepared.prices.keys())}
    loaded = _Loaded(positions=positions, prices=prices)
    trade = _new_trade(agent=agent, order=order, price=price, now=now)
    held = positions.get(order.symbol)
    position = _reserve(agent=agent, trade=trade, price=price, position=held)
    agent.last_active_at = now
    # 5. the oversight decision taken before the lock
    if evaluation.auto_approved:
        status_code = 201
        # 6. execution
        _execute(agent=agent, trade=trade, position=position, price=price, loaded=loaded)
    else:
        status_code = 202
        trade.status = TradeStatus.PENDING_APPROVAL
        _save(agent=agent, trade=trade, position=position)
        approval = approval_request_open(trade=trade, agent=agent, evaluation=evaluation)
        loaded.approval_request_id = approval.pk
        _publish_trade(trade, "trade.created", loaded)
        # The order holds its cash (or shares) while it waits: "available" changed.
        _publish_loaded_portfolio(agent, position, loaded)
    loaded.usage.append(
        usage_build(
            agent=agent,
            code=TRADE_EXECUTIONS,
            quantity=1,
            symbol=trade.symbol,
            properties={"trade_id": trade.pk, "side": trade.side, "type": trade.type},
            transaction_id=server_transaction_id(TRADE_EXECUTIONS, trade.pk),
        )
    )
    if api_call is not None:
        loaded.usage.append(usage_build(agent=agent, **api_call))
    usage_bulk_record(loaded.usage)
    body = _plain(_trade_data(trade, loaded))
    # 7. idempotency
    if key:
        IdempotencyRecord.objects.create(
            agent=agent,
            key=key,
            request_hash=request_hash,
            response_status=status_code,
            response_body=body,
            trade=trade,
        )
    return SubmitOutcome(status_code=status_code, body=body, replayed=False, trade=trade)


def daily_trade_limit_check(*, agent: Agent, now: datetime) -> None:
    """Rule 3, the server's own pre-trade control: at most ``daily_trade_limit`` orders
    accepted per UTC day for the agent, counted from this database.

    Every accepted order leaves a trade row (a refused one leaves none), so the count is the
    agent's trades created since midnight UTC; it reads at most ``daily_trade_limit`` of them.
    Call it with the agent's row locked (``select_for_update``) in the transaction that places
    the order: concurrent orders of one agent are then counted one after the other and can
    never exceed the limit together. It depends on no other service: the metering service's
    ``CheckQuota`` enforces that service's own limits besides. Raises
    ``problems.QuotaExceeded`` (429, ``limit``, ``remaining`` 0, ``Retry-After`` = seconds
    to the end of the UTC day).
    """
    limit = int(agent.effective_config["daily_trade_limit"])
    day_start, day_end = period_window(DAILY, now)
    accepted = Trade.objects.filter(agent=agent, created_at__gte=day_start)[:limit].count()
    if accepted < limit:
        return
    retry_after = max(math.ceil((day_end - now).total_seconds()), 1)
    raise problems.QuotaExceeded(
        f"The agent's daily_trade_limit of {limit} orders per UTC day is reached; it resets "
        f"at {day_end.isoformat()}.",
        limit=limit,
        remaining=0,
        retry_after=retry_after,
        metric_code="daily_trade_limit",
    )


def _new_trade(*, agent: Agent, order: Order, price: Decimal, now: datetime) -> Trade:
    trade = Trade(
        agent=agent,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        time_in_force=order.time_in_force,
        quantity=order.quantity,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        status=TradeStatus.OPEN,
        metadata=order.metadata,
        market_day=market.market_day(now) if order.time_in_force == TimeInForce.DAY else None,
    )
    trade.notional = cents(trade.quantity * _estimate_price(trade, price))
    if trade.notional > MAX_NOTIONAL:
        # Past it the amounts of the order and of the books are no longer stored exactly.
        raise problems.ValidationFailed(
            f"The order's notional {trade.notional} is above {MAX_NOTIONAL}.",
            errors={"quantity": [f"Quantity times price must be at most {MAX_NOTIONAL}."]},
        )
    # Constraints are the database's job here; the serializer already checked the values.
    trade.full_clean(exclude=["agent"], validate_unique=False, validate_constraints=False)
    return trade


# --- after approval, cancellation, release ------------------------------------------------------


def trade_execute_approved(*, trade: Trade) -> Trade:
    """Execute a ``pending_approval`` trade whose last approval just arrived.

    Runs in the caller's transaction (oversight's, agent already locked; locking again is
    harmless). A buy is re-checked at the current price: if reservation plus free cash no
    longer cover it, it becomes ``rejected`` with a ``rejection_reason`` and its reservation
    is released; otherwise the reservation is adjusted to the new estimate and the order
    fills, rests ``open`` or (ioc/fok) is cancelled, as at submission. 409 if the trade is not
    pending approval.
    """
    with transaction.atomic():
        agent, position, trade = _lock_for_trade(trade)
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
        _execute(agent=agent, trade=trade, position=position, price=price)
        if trade.status == TradeStatus.OPEN:
            _publish_trade(trade, "trade.updated")
    return trade


def trade_release(*, trade: Trade, status: str, reason: str = "") -> Trade:
    """End an open or pending order without a fill (``rejected``, ``expired`` or
    ``cancelled``): its reserved cash or shares return to the agent, ``cancelled_at`` is set,
    ``trade.cancelled``/``trade.updated`` is published. 409 if the trade already ended. Does
    not touch its approval request (oversight calls this after resolving it)."""
    if status not in RELEASE_STATUSES:
        raise ValueError(f"trade_release cannot set status {status!r}")
    with transaction.atomic():
        agent, position, trade = _lock_for_trade(trade)
        if trade.status not in OPEN_STATUSES:
            raise problems.Conflict(f"The trade is already {trade.status}.")
        return _release(
            agent=agent,
            trade=trade,
            position=position,
            status=status,
            reason=reason,
        )


def trade_cancel(
    *, trade: Trade, actor=None, reason: str = "", oversight_first: bool = True
) -> Trade:
    """Cancel an open or pending order: its reservation is released and, for a pending one,
    its approval request is cancelled too. A filled, rejected, expired or cancelled trade →
    409 ``conflict``.

    A pending order's request is closed on the oversight service first, before any lock
    (``approval_request_withdraw``), so a cancellation racing an operator's decision has one
    outcome on both sides. ``oversight_first=False`` (the kill switch, which cancels under the
    agent's lock) cancels locally and tells the service after commit."""
    from oversight.choices import RequestStatus
    from oversight.models import ApprovalRequest
    from oversight.services import approval_request_cancel, approval_request_withdraw

    request_reason = reason or "trade cancelled"
    closed_remotely = False
    if oversight_first:
        closed_remotely = approval_request_withdraw(trade=trade, actor=actor, reason=request_reason)
    with transaction.atomic():
        agent, position, trade = _lock_for_trade(trade)
        if closed_remotely and trade.status == TradeStatus.CANCELLED:
            return trade  # a racing decision followed the service's cancellation here first
        if trade.status not in OPEN_STATUSES:
            raise problems.Conflict(f"A {trade.status} trade cannot be cancelled.")
        if trade.status == TradeStatus.PENDING_APPROVAL:
            approval = ApprovalRequest.objects.filter(trade=trade).first()
            if approval is not None and approval.status == RequestStatus.PENDING:
                approval_request_cancel(
                    approval_request=approval,
                    actor=actor,
                    reason=request_reason,
                    closed_remotely=closed_remotely,
                )
        return _release(
            agent=agent,
            trade=trade,
            position=position,
            status=TradeStatus.CANCELLED,
            reason=reason or "cancelled by the owner",
        )


# --- the market: ticks, matching, day expiry ----------------------------------------------------


def _crossing(symbol: str, price: Decimal) -> Q:
    """Open orders of ``symbol`` that a market price of ``price`` executes or triggers."""
    buy, sell = Q(side=Side.BUY), Q(side=Side.SELL)
    live_limit = Q(type=OrderType.LIMIT) | Q(type=OrderType.STOP_LIMIT, stop_triggered=True)
    untriggered = Q(type__in=STOP_TYPES, stop_triggered=False)
    return Q(symbol=symbol) & (
        (live_limit & buy & Q(limit_price__gte=price))
        | (live_limit & sell & Q(limit_price__lte=price))
        | (untriggered & buy & Q(stop_price__lte=price))
        | (untriggered & sell & Q(stop_price__gte=price))
    )


def orders_match(*, prices: dict[str, Decimal] | None = None) -> int:
    """The matcher: execute (or trigger) resting orders that ``prices`` cross.

    ``prices`` defaults to the current price of every symbol. Each order is matched in its
    own transaction under the agent lock, re-checked there (it may have been cancelled
    meanwhile). Returns the number of orders filled. One order failing does not stop the
    others: it is logged and counted (``background_row_failed``) and tried on the next tick.
    """
    if prices is None:
        prices = {row.symbol: cents(row.price) for row in market.all_prices()}
    if not prices:
        return 0
    crossing = Q()
    for symbol, price in prices.items():
        crossing |= _crossing(symbol, price)
    candidates = list(
        Trade.objects.filter(status=TradeStatus.OPEN)
        .filter(crossing)
        .order_by("created_at")
        .values_list("pk", "agent_id", "symbol")
    )
    filled = 0
    for trade_id, agent_id, symbol in candidates:
        try:
            filled += _match_one(
                trade=Trade(pk=trade_id, agent_id=agent_id, symbol=symbol), price=prices[symbol]
            )
        except Exception:
            background_row_failed("matching", trade_id)
    return filled


def _match_one(*, trade: Trade, price: Decimal) -> int:
    with transaction.atomic():
        agent, position, trade = _lock_for_trade(trade)
        if trade.status != TradeStatus.OPEN:
            return 0
        was_triggered = trade.stop_triggered
        fill_price = _fill_price(trade, price)
        if fill_price is None:
            if trade.stop_triggered != was_triggered:
                trade.save(update_fields=["stop_triggered", "updated_at"])
                _publish_trade(trade, "trade.updated")
            return 0
        _fill(agent=agent, trade=trade, position=position, price=fill_price)
        return int(trade.status == TradeStatus.FILLED)


def market_tick(*, now: datetime | None = None, force: bool = False) -> dict:
    """One market step (the periodic job): move prices, match resting orders, and snapshot
    the portfolios that moved (``portfolio_snapshots_take``: at most once a minute each)."""
    from agents.services import portfolio_snapshots_take

    rows = market.tick(now=now, force=force)
    if not rows:
        return {"ticked": 0, "filled": 0, "snapshots": 0}
    filled = orders_match(prices={row.symbol: cents(row.price) for row in rows})
    snapshots = portfolio_snapshots_take(now=now)
    return {"ticked": len(rows), "filled": filled, "snapshots": snapshots}


def orders_expire_day(*, now: datetime | None = None) -> int:
    """Expire ``open`` day orders whose simulated trading day has ended (reservations
    released, ``trade.updated`` published), oldest first, each in its own transaction. An
    order that cannot be expired is logged and counted (``background_row_failed``) and the
    others still expire; it is tried again on the next run. Returns how many expired."""
    day = market.market_day(now)
    due = list(
        Trade.objects.filter(
            status=TradeStatus.OPEN, time_in_force=TimeInForce.DAY, market_day__lt=day
        )
        .order_by("created_at")
        .values_list("pk", "agent_id", "symbol", "market_day")
    )
    expired = 0
    for trade_id, agent_id, symbol, trade_day in due:
        try:
            trade_release(
                trade=Trade(pk=trade_id, agent_id=agent_id, symbol=symbol),
                status=TradeStatus.EXPIRED,
                reason=f"Day order expired at the end of market day {trade_day}.",
            )
            expired += 1
        except problems.Conflict:
            continue  # filled or cancelled meanwhile
        except Exception:
            background_row_failed("day-orders", trade_id)
    return expired
