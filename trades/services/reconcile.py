"""Reconciliation of reservations with the orders still live: the safety net at start."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q, Sum

from agents.models import Agent, Position
from agents.money import ZERO
from observability.metrics import background_row_failed
from trades.choices import OPEN_STATUSES, Side
from trades.models import Trade
from trades.services.locks import ALL, lock_rows

logger = logging.getLogger("trading_demo.agents")


@dataclass(frozen=True)
class ReconcileReport:
    """What ``reservations_reconcile`` found and fixed."""

    agents_checked: int
    agents_fixed: int
    positions_fixed: int
    trades_fixed: int


def _expected_holds(agent_ids=None) -> tuple[dict, dict]:
    """Cash held by open/pending buys per agent, shares held by open/pending sells per
    (agent, symbol): what the reservations must be."""
    live = Trade.objects.filter(status__in=OPEN_STATUSES)
    if agent_ids is not None:
        live = live.filter(agent_id__in=agent_ids)
    cash = dict(
        live.filter(side=Side.BUY)
        .values("agent_id")
        .annotate(total=Sum("reserved_amount"))
        .values_list("agent_id", "total")
    )
    shares = {
        (agent_id, symbol): total
        for agent_id, symbol, total in live.filter(side=Side.SELL)
        .values("agent_id", "symbol")
        .annotate(total=Sum("reserved_quantity"))
        .values_list("agent_id", "symbol", "total")
    }
    return cash, shares


def _reconcile_agent(agent_id) -> tuple[bool, int, int]:
    """Fix one agent's holds in one transaction: ``(reserved_cash fixed or a position's,
    positions fixed, ended trades released)``."""
    positions_fixed = trades_fixed = 0
    with transaction.atomic():
        rows = lock_rows(
            agent_id=agent_id,
            symbols=ALL,
            trades=~Q(status__in=OPEN_STATUSES)
            & (Q(reserved_amount__gt=0) | Q(reserved_quantity__gt=0)),
        )
        agent, ended = rows.agent, rows.trades
        positions = sorted(rows.positions.values(), key=lambda position: position.symbol)
        for trade in ended:
            logger.warning(
                "reconcile: %s trade %s still held %s cash and %s shares; released",
                trade.status,
                trade.pk,
                trade.reserved_amount,
                trade.reserved_quantity,
            )
            trade.reserved_amount = ZERO
            trade.reserved_quantity = ZERO
            trade.save(update_fields=["reserved_amount", "reserved_quantity", "updated_at"])
            trades_fixed += 1
        agent_cash, agent_shares = _expected_holds([agent.pk])
        expected = agent_cash.get(agent.pk, ZERO)
        changed = False
        if agent.reserved_cash != expected:
            logger.warning(
                "reconcile: agent %s reserved_cash %s, open buys hold %s; fixed",
                agent.pk,
                agent.reserved_cash,
                expected,
            )
            agent.reserved_cash = expected
            agent.save(update_fields=["reserved_cash", "updated_at"])
            changed = True
        for position in positions:
            held = agent_shares.get((agent.pk, position.symbol), ZERO)
            if position.reserved_quantity != held:
                logger.warning(
                    "reconcile: agent %s %s reserved_quantity %s, open sells hold %s; fixed",
                    agent.pk,
                    position.symbol,
                    position.reserved_quantity,
                    held,
                )
                position.reserved_quantity = held
                position.save(update_fields=["reserved_quantity", "updated_at"])
                positions_fixed += 1
                changed = True
    return changed, positions_fixed, trades_fixed


def reservations_reconcile() -> ReconcileReport:
    """Make every reservation equal the holds of the orders still live; log each drift fixed.

    Run at server start (``serve``, ``run_jobs``) and by ``manage.py reconcile_reservations``.
    For each agent whose ``reserved_cash`` differs from the sum of its open and pending buys'
    ``reserved_amount``, whose positions' ``reserved_quantity`` differ from the sum of their
    open and pending sells' ``reserved_quantity``, or with an ended order still holding
    something, the agent's rows are locked (``lock_rows``: agent → positions → trades),
    recomputed and fixed in one transaction. Balances, positions and P&L are never
    touched: only holds. Every balance change commits with its holds, so a healthy database
    has nothing to fix; this is the safety net for a crash or a manual edit. Finding the
    suspects costs four queries whatever the number of agents. An agent whose books cannot be
    fixed (fixing would break a constraint, a row cannot be read) is left as it is, logged
    with its id and counted (``background_row_failed("reconcile", …)``); the others are fixed
    and the process starts.
    """
    cash, shares = _expected_holds()
    suspects = {
        agent_id
        for agent_id, reserved in Agent.objects.values_list("pk", "reserved_cash")
        if reserved != cash.get(agent_id, ZERO)
    }
    suspects |= {
        agent_id
        for agent_id, symbol, reserved in Position.objects.values_list(
            "agent_id", "symbol", "reserved_quantity"
        )
        if reserved != shares.get((agent_id, symbol), ZERO)
    }
    suspects |= set(
        Trade.objects.exclude(status__in=OPEN_STATUSES)
        .filter(Q(reserved_amount__gt=0) | Q(reserved_quantity__gt=0))
        .values_list("agent_id", flat=True)
    )
    agents_checked = Agent.objects.count()
    agents_fixed = positions_fixed = trades_fixed = 0
    for agent_id in sorted(suspects, key=str):
        try:
            agent_fixed, agent_positions, agent_trades = _reconcile_agent(agent_id)
        except Exception:
            # One agent's books that cannot be fixed (a constraint they would break, a row
            # that cannot be read) must not keep the process from starting or the others
            # from being fixed.
            background_row_failed("reconcile", agent_id)
            continue
        agents_fixed += int(agent_fixed)
        positions_fixed += agent_positions
        trades_fixed += agent_trades
    if agents_fixed or trades_fixed:
        logger.warning(
            "reconcile: fixed %d agents, %d positions, %d ended trades",
            agents_fixed,
            positions_fixed,
            trades_fixed,
        )
    return ReconcileReport(
        agents_checked=agents_checked,
        agents_fixed=agents_fixed,
        positions_fixed=positions_fixed,
        trades_fixed=trades_fixed,
    )
