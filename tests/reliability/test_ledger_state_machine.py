"""Ledger invariants under random operation sequences (hypothesis stateful testing).

The machine drives the real services — agent creation and the kill switch, market and limit
orders, price ticks through ``set_price`` and the matcher, approvals, rejections, cancels,
expiries and idempotent replays — against the real database and reference gRPC services, and
checks every agent's books after every step (``assert_books_balance``). Each example runs in a
transaction rolled back at its end, so examples never see each other's rows; the services'
own atomic blocks become savepoints inside it, exactly as under a request.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from agents.models import Agent, Position
from agents.services import agent_create
from api import problems
from oversight.choices import RequestStatus
from oversight.models import ApprovalRequest
from tests.helpers import FIXED_PRICES, assert_books_balance
from trades import market
from trades.choices import OPEN_STATUSES
from trades.models import Trade
from trades.services import (
    agent_terminate,
    approval_decide,
    approvals_expire_due,
    orders_expire_day,
    orders_match,
    trade_cancel,
    trade_submit,
)

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(180)]

SYMBOLS = ("AAPL", "GOOGL", "MSFT")
# Answers an order may legitimately get; anything else (a 5xx, a crash) fails the machine.
ORDER_REFUSALS = (
    problems.InsufficientFunds,
    problems.InsufficientPosition,
    problems.PositionLimit,
    problems.AgentNotActive,
)
# Orders at or above 3,000 wait for an operator, so the machine sees both paths.
AGENT_CONFIG = {
    "auto_approval_limit": "3000",
    "approval_budget_fraction": "1",
    "max_position_fraction": "0.6",
}


def _pick(items: list, index: int):
    return items[index % len(items)] if items else None


class LedgerMachine(RuleBasedStateMachine):
    owner = None
    operators: tuple = ()
    # What the examples did, across the run: the test fails if a path was never exercised.
    seen: Counter = Counter()

    def __init__(self):
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        for symbol, price in FIXED_PRICES.items():
            market.set_price(symbol, price)
        self.agent_ids: list = []
        self.trade_ids: list = []
        # idempotency key → (agent id, request body, status code, response body)
        self.keys: dict[str, tuple] = {}
        self.counter = 0
        self.seen_terminate = False  # at most one kill switch per example

    def teardown(self):
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- helpers -----------------------------------------------------------------------------

    def _submit(self, agent_id, data: dict, key: str | None):
        before = Trade.objects.count()
        try:
            outcome = trade_submit(
                agent_id=agent_id, user=self.owner, data=data, idempotency_key=key
            )
        except ORDER_REFUSALS as refusal:
            event(f"order refused: {refusal.default_code}")
            self.seen[refusal.default_code] += 1
            assert Trade.objects.count() == before  # a refused order leaves nothing
            return None
        assert outcome.status_code in (201, 202)
        assert not outcome.replayed
        assert Trade.objects.count() == before + 1
        self.trade_ids.append(outcome.trade.pk)
        event(f"order {outcome.status_code} {outcome.trade.status}")
        self.seen[f"{data['side']} {outcome.status_code} {outcome.trade.status}"] += 1
        if key:
            self.keys[key] = (agent_id, data, outcome.status_code, outcome.body)
        return outcome

    def _in_order(self, trades) -> list:
        """``trades`` of this example in the order they were placed (ids are random UUIDs and
        timestamps may tie: hypothesis needs the same choice on every replay)."""
        found = {trade.pk: trade for trade in trades.filter(pk__in=self.trade_ids)}
        return [found[pk] for pk in self.trade_ids if pk in found]

    def _pending(self) -> list:
        pending = self._in_order(Trade.objects.filter(status="pending_approval"))
        by_trade = dict(
            ApprovalRequest.objects.filter(
                status=RequestStatus.PENDING, trade__in=pending
            ).values_list("trade_id", "pk")
        )
        return [by_trade[trade.pk] for trade in pending if trade.pk in by_trade]

    # --- rules -------------------------------------------------------------------------------

    @initialize(budget=st.sampled_from(["5000", "20000", "100000"]))
    def first_agents(self, budget):
        self.create_agent("100000")
        self.create_agent(budget)

    @rule(budget=st.sampled_from(["5000", "20000", "100000"]))
    def create_agent(self, budget):
        agent = agent_create(
            owner=self.owner, name="machine", budget=Decimal(budget), config=AGENT_CONFIG
        )
        self.agent_ids.append(agent.pk)

    @rule(
        pick=st.integers(0, 99),
        symbol=st.sampled_from(SYMBOLS),
        quantity=st.integers(1, 40),
        keyed=st.booleans(),
    )
    def buy_market(self, pick, symbol, quantity, keyed):
        agent_id = _pick(self.agent_ids, pick)
        self.counter += 1
        data = {"symbol": symbol, "side": "buy", "quantity": str(quantity)}
        self._submit(agent_id, data, f"key-{self.counter}" if keyed else None)

    @rule(
        pick=st.integers(0, 99),
        symbol=st.sampled_from(SYMBOLS),
        quantity=st.integers(1, 40),
        offset=st.integers(-8, 8),
        side=st.sampled_from(["buy", "sell"]),
        tif=st.sampled_from(["day", "gtc", "ioc"]),
    )
    def limit_order(self, pick, symbol, quantity, offset, side, tif):
        agent_id = _pick(self.agent_ids, pick)
        if side == "sell":
            held = Position.objects.filter(agent_id=agent_id, symbol=symbol).first()
            if held is None or held.quantity <= 0:
                return
            quantity = min(quantity, int(held.quantity) + 1)  # sometimes one share too many
        price = market.current_price(symbol) * (100 + offset) / 100
        self.counter += 1
        data = {
            "symbol": symbol,
            "side": side,
            "type": "limit",
            "quantity": str(quantity),
            "limit_price": str(price.quantize(Decimal("0.01"))),
            "time_in_force": tif,
            "client_order_id": f"limit-{self.counter}",
        }
        self._submit(agent_id, data, None)

    @precondition(
        lambda self: Position.objects.filter(agent_id__in=self.agent_ids, quantity__gt=0).exists()
    )
    @rule(pick=st.integers(0, 999), fraction=st.sampled_from([25, 50, 100, 110]))
    def sell_market(self, pick, fraction):
        position = _pick(
            sorted(
                Position.objects.filter(agent_id__in=self.agent_ids, quantity__gt=0),
                key=lambda p: (self.agent_ids.index(p.agent_id), p.symbol),
            ),
            pick,
        )
        if position is None:
            return
        quantity = max(int(position.quantity * fraction / 100), 1)
        data = {"symbol": position.symbol, "side": "sell", "quantity": str(quantity)}
        self._submit(position.agent_id, data, None)

    @rule(symbol=st.sampled_from(SYMBOLS), move=st.integers(-20, 20))
    def tick(self, symbol, move):
        price = market.current_price(symbol) * (100 + move) / 100
        market.set_price(symbol, price.quantize(Decimal("0.01")))
        if orders_match():
            event("tick filled resting orders")
            self.seen["tick filled"] += 1

    def _has_pending(self) -> bool:
        return ApprovalRequest.objects.filter(
            status=RequestStatus.PENDING, agent_id__in=self.agent_ids
        ).exists()

    def _has_live_orders(self) -> bool:
        return Trade.objects.filter(agent_id__in=self.agent_ids, status__in=OPEN_STATUSES).exists()

    @precondition(lambda self: self._in_order(Trade.objects.filter(status="open")))
    @rule(pick=st.integers(0, 999), beyond=st.integers(0, 3))
    def tick_through(self, pick, beyond):
        """A price tick that reaches a resting order's limit (or goes ``beyond`` % past it)."""
        trade = _pick(self._in_order(Trade.objects.filter(status="open")), pick)
        step = Decimal(100 - beyond if trade.side == "buy" else 100 + beyond) / 100
        market.set_price(trade.symbol, (trade.limit_price * step).quantize(Decimal("0.01")))
        filled = orders_match()
        trade.refresh_from_db()
        assert trade.status in ("filled", "rejected")
        assert filled >= (trade.status == "filled")
        self.seen["tick filled"] += filled

    @precondition(_has_pending)
    @rule(pick=st.integers(0, 99), decision=st.sampled_from(["approve", "approve2", "reject"]))
    def decide(self, pick, decision):
        """An operator approves (first or second operator) or rejects a pending request."""
        request_id = _pick(self._pending(), pick)
        if decision == "reject":
            approval_decide(
                approval_request_id=request_id,
                actor=self.operators[0],
                decision="reject",
                reason="too risky",
            )
            assert Trade.objects.get(approval_request__pk=request_id).status == "rejected"
            self.seen["rejected"] += 1
            return
        operator = self.operators[decision == "approve2"]
        try:
            approval_decide(approval_request_id=request_id, actor=operator, decision="approve")
        except problems.Conflict:
            # already approved by this operator (a two-approver quorum still waits)
            assert (
                ApprovalRequest.objects.get(pk=request_id)
                .decisions.filter(approver=operator)
                .exists()
            )
            return
        self.seen["approved"] += 1
        trade = Trade.objects.get(approval_request__pk=request_id)
        assert trade.status in ("filled", "open", "cancelled", "rejected", "pending_approval")

    @precondition(_has_live_orders)
    @rule(pick=st.integers(0, 999))
    def cancel(self, pick):
        trade = _pick(
            self._in_order(Trade.objects.filter(status__in=OPEN_STATUSES)),
            pick,
        )
        if trade is None:
            return
        trade_cancel(trade=trade, actor=self.owner)
        assert Trade.objects.get(pk=trade.pk).status == "cancelled"
        self.seen["cancelled"] += 1

    @rule(pick=st.integers(0, 999))
    def cancel_ended(self, pick):
        trade = _pick(
            self._in_order(Trade.objects.exclude(status__in=OPEN_STATUSES)),
            pick,
        )
        if trade is None:
            return
        with pytest.raises(problems.Conflict):
            trade_cancel(trade=trade, actor=self.owner)

    @precondition(lambda self: self._has_pending() or self._has_live_orders())
    @rule()
    def expire(self):
        later = timezone.now() + timedelta(days=3)
        pending = len(self._pending())
        assert approvals_expire_due(later) == pending
        self.seen["expired"] += pending + orders_expire_day(now=later)
        assert not Trade.objects.filter(status="open", time_in_force="day").exists()

    @precondition(lambda self: not self.seen_terminate)
    @rule(pick=st.integers(0, 99))
    def terminate(self, pick):
        active = set(
            Agent.objects.filter(pk__in=self.agent_ids, status="active").values_list(
                "pk", flat=True
            )
        )
        live = [pk for pk in self.agent_ids if pk in active]
        if len(live) < 2:
            return  # keep one agent trading
        agent_id = _pick(live, pick)
        self.seen_terminate = True
        agent_terminate(agent=Agent.objects.get(pk=agent_id), actor=self.owner)
        assert not Trade.objects.filter(agent_id=agent_id, status__in=OPEN_STATUSES).exists()
        self.seen["terminated"] += 1

    @precondition(lambda self: bool(self.keys))
    @rule(pick=st.integers(0, 999), same=st.booleans())
    def replay(self, pick, same):
        key = _pick(sorted(self.keys), pick)
        if key is None:
            return
        agent_id, data, status_code, body = self.keys[key]
        before = Trade.objects.count()
        if same:
            outcome = trade_submit(
                agent_id=agent_id, user=self.owner, data=data, idempotency_key=key
            )
            assert outcome.replayed
            assert (outcome.status_code, outcome.body) == (status_code, body)
            self.seen["replayed"] += 1
        else:
            changed = {**data, "quantity": str(int(data["quantity"]) + 1)}
            with pytest.raises(problems.IdempotencyConflict):
                trade_submit(agent_id=agent_id, user=self.owner, data=changed, idempotency_key=key)
            self.seen["idempotency-conflict"] += 1
        assert Trade.objects.count() == before

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def books_balance(self):
        self.seen["steps"] += 1
        for agent in Agent.objects.filter(pk__in=self.agent_ids):
            assert_books_balance(agent)


def test_ledger_invariants_hold_under_random_operation_sequences(user_factory):
    LedgerMachine.owner = user_factory(username="machine-owner")
    LedgerMachine.operators = (
        user_factory(username="machine-op1", operator=True),
        user_factory(username="machine-op2", operator=True),
    )
    LedgerMachine.TestCase.settings = settings(
        max_examples=20,
        stateful_step_count=30,
        deadline=None,
        derandomize=True,  # reproducible in CI: the same sequences every run
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    LedgerMachine.seen = Counter()
    LedgerMachine.TestCase().runTest()

    # the run went through every path, not just the easy ones
    seen = LedgerMachine.seen
    print(dict(seen))
    assert seen["buy 201 filled"] and seen["sell 201 filled"], dict(seen)
    assert seen["buy 202 pending_approval"] and seen["tick filled"], dict(seen)
    assert seen["approved"] + seen["rejected"] > 0, dict(seen)
    assert seen["cancelled"] and seen["expired"] + seen["terminated"] > 0, dict(seen)
    assert seen["replayed"] and seen["idempotency-conflict"], dict(seen)
    assert seen["insufficient-funds"] + seen["insufficient-position"] > 0, dict(seen)
