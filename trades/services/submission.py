"""Submission of an order: rules 1-7 of SPEC §5, the dependencies asked before any lock."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F, FilteredRelation, Q, QuerySet
from django.utils import timezone

from agents.choices import AgentStatus
from agents.models import Agent, Position
from agents.money import ZERO, cents
from agents.selectors import agent_get_for
from api import problems
from api.bounds import MAX_NOTIONAL
from grpc_clients.registry import deadline_budget
from metering.periods import DAILY, period_window
from metering.services import (
    pending_usage_annotated,
    pending_usage_annotations,
    quota_check,
    quota_warn,
    quota_window,
    server_transaction_id,
    usage_build,
    usage_bulk_record,
)
from oversight.services import approval_evaluate, approval_request_open, oversight_request_close
from realtime.services import AgentEvents, agent_events
from trades import market
from trades.choices import TimeInForce, TradeStatus
from trades.models import IdempotencyRecord, Trade
from trades.services.execution import (
    _estimate_price,
    _execute,
    _Loaded,
    _publish_loaded_portfolio,
    _publish_trade,
    _reserve,
    _save,
    _trade_data,
)
from trades.services.locks import ALL, lock_rows
from trades.validation import Order, order_validate, symbol_normalised

TRADE_EXECUTIONS = "trade_executions"

MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True)
class SubmitOutcome:
    """What ``POST /agents/{id}/trades`` answers: status code, body, and whether it is a
    replay of an earlier answer to the same idempotency key."""

    status_code: int
    body: dict
    replayed: bool
    trade: Trade | None


def _plain(data) -> dict:
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _request_hash(data) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    here (``daily_trade_count``), and the ``trade_executions`` quota (429) → 4 funds
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
    prepared = _prepare(agent_id=agent_id, user=user, data=data, key=key, request_hash=request_hash)
    if isinstance(prepared, SubmitOutcome):
        return prepared
    kept = False
    try:
        with transaction.atomic():
            agent = agent_get_for(user=user, agent_id=agent_id, lock=True)
            with agent_events(agent) as events:
                outcome = _submit_locked(
                    agent=agent,
                    prepared=prepared,
                    key=key,
                    request_hash=request_hash,
                    api_call=api_call,
                    events=events,
                )
        kept = not outcome.replayed
        return outcome
    finally:
        if not kept and not prepared.evaluation.auto_approved:
            _drop_oversight_request(prepared.evaluation.request_id)


def _drop_oversight_request(request_id) -> None:
    with deadline_budget(settings.GRPC_TIMEOUT_SECONDS):
        oversight_request_close(request_id, reason="order not placed")


def _prepare(
    *, agent_id, user, data, key: str | None, request_hash: str
) -> SubmitOutcome | _Prepared:
    """Rules 1-5 on rows read without a lock: a replay answers at once; an order that fails
    a rule answers its problem before any later rule's call; the quota and the oversight
    decision are asked here, outside any transaction."""
    # The agent is read with its usage still in the outbox, which the quota counts as used,
    # and with its position in the symbol asked for and that symbol's price.
    now = timezone.now()
    period_start, _ = quota_window(TRADE_EXECUTIONS, now)
    symbol = _requested_symbol(data)
    agents = _agents_for_order(period_start, symbol)
    agent = agent_get_for(user=user, agent_id=agent_id, queryset=agents)
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
        quota = quota_check(
            agent=agent,
            metric_code=TRADE_EXECUTIONS,
            quantity=1,
            now=now,
            warn=False,
            pending=pending_usage_annotated(agent),
        )
        # 4. funds / position, on the rows as read (checked again under the lock)
        held, price = _held_and_price(agent=agent, symbol=order.symbol, read=symbol)
        trade = _new_trade(agent=agent, order=order, price=price, now=timezone.now())
        try:
            _reserve(agent=agent, trade=trade, price=price, position=held)
        except (problems.InsufficientFunds, problems.InsufficientPosition, problems.PositionLimit):
            # The agent and its position may have been read by separate statements
            # (``_held_and_price``), so a fill committed between them can make them disagree:
            # a refusal is given only as the locked rows decide it.
            _reserve_on_locked_rows(agent_id=agent.pk, order=order, price=price)
        # 5. oversight
        evaluation = approval_evaluate(
            agent=agent,
            trade=trade,
            notional=trade.notional,
            held_value=held.cost_basis if held is not None else ZERO,
        )
    return _Prepared(order=order, price=price, quota=quota, evaluation=evaluation)


def _requested_symbol(data) -> str | None:
    """The market symbol the order's body names, as the validation will read it, or None.

    Read before the body is validated (the validation needs the agent), so that the agent is
    read with its position in that symbol and the symbol's price. Only a market symbol is
    returned; the validation still answers whatever it refuses, as it would without this."""
    symbol = data.get("symbol") if isinstance(data, dict) else None
    if not isinstance(symbol, str):
        return None
    symbol = symbol_normalised(symbol)
    return symbol if market.is_known(symbol) else None


# The columns of the agent's position that the checks before the lock need, read with the
# agent as ``held_<column>`` (``_agents_for_order``).
HELD_FIELDS = ("quantity", "reserved_quantity", "cost_basis")


@functools.lru_cache(maxsize=128)
def _agents_for_order(since: datetime, symbol: str | None) -> QuerySet[Agent]:
    """Agents annotated with their ``trade_executions`` usage since ``since`` still in the
    outbox (``pending_usage_annotated``) and, for a market ``symbol``, with the current price
    of ``symbol`` (``order_price``) and their position in it (``held_<column>``, NULL when
    they hold none): the rows the checks before the lock need, in one statement
    (``_held_and_price``).

    Built once per quota period and symbol, not per order: building the subqueries costs the
    ORM more than a statement. The keys are bounded: ``symbol`` is None or one of
    ``MARKET_SYMBOLS``. The queryset itself is never evaluated; each read clones it
    (``agent_get_for``), so it is shared safely between requests and threads."""
    agents = Agent.objects.all()
    annotations = pending_usage_annotations(metric_code=TRADE_EXECUTIONS, since=since)
    if symbol is not None:
        # The position joined on the agent (at most one: one position per agent and symbol),
        # which costs the ORM less to build than a subquery per column.
        agents = agents.annotate(
            held=FilteredRelation("positions", condition=Q(positions__symbol=symbol))
        )
        annotations["order_price"] = market.price_expression(symbol)
        for name in HELD_FIELDS:
            annotations[f"held_{name}"] = F(f"held__{name}")
    return agents.annotate(**annotations)


def _held_and_price(
    *, agent: Agent, symbol: str, read: str | None
) -> tuple[Position | None, Decimal]:
    """The agent's position in ``symbol`` as read before the lock (None if it holds none;
    unsaved, for the checks only) and the symbol's current price (``market.prices_for``).

    Both come with the agent when it was read for ``symbol`` (``read``, by
    ``_agents_for_order``); otherwise they are read now."""
    if symbol != read:
        price = market.prices_for({symbol})[symbol]
        return Position.objects.filter(agent=agent, symbol=symbol).first(), price
    price = market.prices_completed({symbol: agent.order_price})[symbol]
    if agent.held_quantity is None:
        return None, price
    held = Position(
        agent=agent, symbol=symbol, **{name: getattr(agent, f"held_{name}") for name in HELD_FIELDS}
    )
    return held, price


def _reserve_on_locked_rows(*, agent_id, order: Order, price: Decimal) -> None:
    """Check the funds or shares of ``order`` on the agent's and position's locked rows;
    raises the same problems as ``_reserve``. Nothing is saved: the reservation itself is
    made by the locked submission."""
    with transaction.atomic():
        rows = lock_rows(agent_id=agent_id, symbols=(order.symbol,))
        agent, held = rows.agent, rows.positions.get(order.symbol)
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
    events: AgentEvents,
) -> SubmitOutcome:
    """Rules 2, 4 and 6-7 with the agent row locked, on what ``_prepare`` obtained. The rows
    needed twice (positions, prices) are read once; usage rows go in one INSERT at the end;
    live events in one (``agent_events``)."""
    if key:
        record = IdempotencyRecord.objects.filter(agent=agent, key=key).first()
        if record is not None:
            return _replay(record, request_hash)
    order, price, evaluation = prepared.order, prepared.price, prepared.evaluation
    # 2. again: the kill switch or another order may have come first
    _check_can_place(agent=agent, order=order)
    # 3. the agent's own daily limit, counted exactly here under its lock
    daily_trade_count(agent=agent, now=timezone.now())
    quota_warn(
        agent=agent,
        metric_code=TRADE_EXECUTIONS,
        decision=prepared.quota,
        quantity=1,
        events=events,
    )
    # 4. funds / position, on the locked rows, at the price the order was decided at
    now = timezone.now()
    rows = lock_rows(agent=agent, symbols=ALL, prices=True)
    positions = rows.positions
    # For the portfolio event: the held symbols at their current prices, read with the
    # locked positions, and the order's at the price it was decided at.
    loaded = _Loaded(positions=positions, prices={**rows.prices, order.symbol: price})
    # The same order at the same price as validated before the lock: not validated again.
    trade = _new_trade(agent=agent, order=order, price=price, now=now, validate=False)
    held = positions.get(order.symbol)
    position = _reserve(agent=agent, trade=trade, price=price, position=held)
    agent.last_active_at = now
    # 5. the oversight decision taken before the lock
    if evaluation.auto_approved:
        status_code = 201
        # 6. execution
        _execute(
            agent=agent, trade=trade, position=position, price=price, events=events, loaded=loaded
        )
    else:
        status_code = 202
        trade.status = TradeStatus.PENDING_APPROVAL
        _save(agent=agent, trade=trade, position=position, events=events)
        approval = approval_request_open(
            trade=trade, agent=agent, evaluation=evaluation, events=events
        )
        loaded.approval_request_id = approval.pk
        _publish_trade(trade, "trade.created", events, loaded)
        # The order holds its cash (or shares) while it waits: "available" changed.
        _publish_loaded_portfolio(agent, position, loaded, events)
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
    body = loaded.trade_data or _plain(_trade_data(trade, loaded))
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


def daily_trade_count(*, agent: Agent, now: datetime) -> None:
    """Rule 3, the server's own pre-trade control: count the order being accepted against the
    agent's ``daily_trade_limit`` of orders per UTC day, or refuse it.

    The count is kept on the agent row (``Agent.trades_on``, which ``GET
    /metering/agents/{id}/quota`` shows through ``trades.selectors.daily_trades_for``): it
    starts again from 0 on the first order of a new UTC day and is set here, in memory, for
    the agent's UPDATE of the order (``execution._save_agent``) to write. Call it with the
    agent's row locked (``select_for_update``) in the transaction that accepts the order:
    concurrent orders of one agent are then counted one after the other and can never exceed
    the limit together, and an order refused later in the transaction rolls its count back
    with it. It depends on no other service: the metering service's ``CheckQuota`` enforces
    that service's own limits besides. Raises ``problems.QuotaExceeded`` (429, ``limit``,
    ``remaining`` 0, ``Retry-After`` = seconds to the end of the UTC day).
    """
    limit = int(agent.effective_config["daily_trade_limit"])
    day_start, day_end = period_window(DAILY, now)
    today = day_start.date()
    accepted = agent.trades_on(today)
    if accepted < limit:
        agent.trades_today = accepted + 1
        agent.trades_day = today
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


def _new_trade(
    *, agent: Agent, order: Order, price: Decimal, now: datetime, validate: bool = True
) -> Trade:
    """The unsaved Trade of ``order`` at ``price``; with ``validate``, its notional is checked
    against ``MAX_NOTIONAL``. Its other fields come from the validated order
    (``order_validate``, within ``api.bounds``), so they are not validated again."""
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
    if not validate:
        return trade
    if trade.notional > MAX_NOTIONAL:
        # Past it the amounts of the order and of the books are no longer stored exactly.
        raise problems.ValidationFailed(
            f"The order's notional {trade.notional} is above {MAX_NOTIONAL}.",
            errors={"quantity": [f"Quantity times price must be at most {MAX_NOTIONAL}."]},
        )
    return trade
