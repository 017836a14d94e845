"""Plain helpers shared by the tests: API paths, the books-balance check, problem documents,
PostgreSQL's plans, threads released together, a free port. Fixtures live in
``tests/conftest.py``."""

from __future__ import annotations

import re
import socket
import threading
from decimal import Decimal

from django.db import connection
from django.db.models import Sum

# The market at round prices (the ``prices`` fixture), so an order's notional is known.
FIXED_PRICES = {
    "AAPL": "100.00",
    "GOOGL": "50.00",
    "MSFT": "200.00",
    "AMZN": "80.00",
    "TSLA": "25.00",
}

# Agent limits under which no order of a test needs an operator's approval.
NO_APPROVAL = {
    "auto_approval_limit": "1000000",
    "approval_budget_fraction": "1",
    "max_position_fraction": "1",
    "daily_trade_limit": 1000,
}

AGENTS = "/api/v1/agents"
OVERSIGHT_REQUESTS = "/api/v1/oversight/requests"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


# --- paths -----------------------------------------------------------------------------------


def agent_url(agent, suffix: str = "") -> str:
    return f"{AGENTS}/{agent.pk}{suffix}"


def trades_url(agent, trade_id=None) -> str:
    base = agent_url(agent, "/trades")
    return f"{base}/{trade_id}" if trade_id else base


def approve_url(request_id) -> str:
    return f"{OVERSIGHT_REQUESTS}/{request_id}/approve"


def submit(client, agent, **body):
    """POST an order for the agent with ``client``; returns the response."""
    return client.post(trades_url(agent), body, format="json")


def place_buys(client, agent, count: int) -> None:
    """``count`` market orders of the agent for 1 AAPL each, every one accepted (201)."""
    for _ in range(count):
        assert submit(client, agent, symbol="AAPL", side="buy", quantity="1").status_code == 201


# --- answers ---------------------------------------------------------------------------------


def migrate_to(targets: list[tuple[str, str]]):
    """Migrate the test database to ``targets`` (``(app, migration)`` each); a
    ``MigrationExecutor`` that knows the state reached (``loader.project_state``)."""
    from django.db.migrations.executor import MigrationExecutor

    MigrationExecutor(connection).migrate(targets)
    return MigrationExecutor(connection)


def buffered_events(agent, *, event: str | None = None, channel: str | None = None) -> list:
    """The agent's buffered live events in ``seq`` order (what a resuming client replays),
    only those named ``event`` or of ``channel`` when given."""
    from realtime.selectors import agent_events_buffered

    return [
        e
        for e in agent_events_buffered(agent_id=agent.pk)
        if (event is None or e.event == event) and (channel is None or e.channel == channel)
    ]


def problem_slug(response) -> str:
    """The last segment of a problem document's ``type``, e.g. ``insufficient-funds``."""
    assert response["Content-Type"].startswith("application/problem+json"), response.content
    return response.json()["type"].rstrip("/").rsplit("/", 1)[-1]


def assert_problem(response, status: int, slug: str) -> dict:
    """The response is an RFC 7807 problem document of this status and type; returns it."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"].rstrip("/").endswith(f"/problems/{slug}")
    return body


# --- the books -------------------------------------------------------------------------------


def assert_books_balance(agent) -> None:
    """Every ledger invariant of one agent, read fresh from the database.

    cash ≥ 0; 0 ≤ reserved_cash ≤ cash and equal to the open/pending buys' holds; each
    position ≥ 0 with reserved shares equal to its open/pending sells' holds; cash + Σ cost
    basis == budget + realized P&L; no closed order still holds cash; every fill metered once
    (``trade_volume``) and every accepted order once (``trade_executions``).
    """
    from agents.models import Position
    from agents.money import whole_dollars
    from metering.models import UsageEvent
    from trades.choices import OPEN_STATUSES, Side
    from trades.models import Fill, Trade

    agent.refresh_from_db()
    live = Trade.objects.filter(agent=agent, status__in=OPEN_STATUSES)
    held_cash = live.filter(side=Side.BUY).aggregate(t=Sum("reserved_amount"))["t"] or Decimal(0)
    assert agent.cash_balance >= 0
    assert agent.reserved_cash == held_cash
    assert 0 <= agent.reserved_cash <= agent.cash_balance
    for position in Position.objects.filter(agent=agent):
        held = live.filter(side=Side.SELL, symbol=position.symbol).aggregate(
            t=Sum("reserved_quantity")
        )["t"] or Decimal(0)
        assert position.quantity >= 0
        assert position.cost_basis >= 0
        assert position.reserved_quantity == held, position.symbol
    cost = Position.objects.filter(agent=agent).aggregate(t=Sum("cost_basis"))["t"] or Decimal(0)
    assert agent.cash_balance + cost == agent.budget + agent.realized_pnl
    assert (
        not Trade.objects.filter(agent=agent)
        .exclude(status__in=OPEN_STATUSES)
        .filter(reserved_amount__gt=0)
        .exists()
    )
    fills = Fill.objects.filter(trade__agent=agent)
    volume = UsageEvent.objects.filter(agent=agent, code="trade_volume")
    assert sorted((e.transaction_id, e.quantity) for e in volume) == sorted(
        (f"server:trade_volume:{f.trade_id}", whole_dollars(f.notional)) for f in fills
    )
    executions = UsageEvent.objects.filter(agent=agent, code="trade_executions")
    assert sorted(e.transaction_id for e in executions) == sorted(
        f"server:trade_executions:{pk}"
        for pk in Trade.objects.filter(agent=agent).values_list("pk", flat=True)
    )


# --- PostgreSQL's plans ----------------------------------------------------------------------


def sent_statements(call) -> list[tuple[str, tuple]]:
    """Run ``call()``; the statements it sent, each as its SQL and parameters."""
    sent = []

    def keep(execute, sql, params, many, context):
        sent.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(keep):
        call()
    return sent


def generic_plan(sql: str, params) -> str:
    """PostgreSQL's plan of a statement sent by the ORM, prepared on the server and planned once
    for any parameter values, as PostgreSQL may plan a prepared statement after a few runs."""
    numbered = iter(range(1, len(params) + 1))
    statement = re.sub(r"%s", lambda _: f"${next(numbered)}", sql).replace("%%", "%")
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE generic_plan_of AS {statement}")
        try:
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            values = ", ".join(connection.ops.compose_sql("%s", [value]) for value in params)
            cursor.execute(f"EXPLAIN EXECUTE generic_plan_of({values})")
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE generic_plan_of")


def usage_of_a_busy_day(agent, *, delivered: int = 2000) -> None:
    """``delivered`` usage events of the agent, delivered today, and the usage table's
    statistics taken on them (in the test's transaction, undone with it): the planner sees a
    few rows in the outbox among many delivered, as an order does, whatever tests before
    left in the statistics."""
    from django.utils import timezone

    from metering.models import DeliveryState, UsageEvent

    now = timezone.now()
    UsageEvent.objects.bulk_create(
        UsageEvent(
            transaction_id=f"server:busy-day:{agent.pk}:{index}",
            agent=agent,
            code="trade_executions",
            quantity=1,
            occurred_at=now,
            delivery_state=DeliveryState.DELIVERED,
            delivered_at=now,
        )
        for index in range(delivered)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE metering_usageevent")


# --- concurrency and processes ---------------------------------------------------------------

# PostgreSQL allows 100 connections by default and other test runs share the server: at most
# this many racing threads hold a database session at once (all of them still race for the
# same agent row; the agent lock serialises them anyway).
MAX_DB_SESSIONS = 40


def race(count: int, call, *, timeout: float = 60.0) -> list:
    """Run ``call(index)`` in ``count`` threads released together by a barrier.

    Returns the results in index order (an exception is returned as the result). Each thread
    closes its own database connection; at most ``MAX_DB_SESSIONS`` are open at once. Fails if
    a thread is still running after ``timeout``.
    """
    barrier = threading.Barrier(count, timeout=timeout)
    sessions = threading.BoundedSemaphore(MAX_DB_SESSIONS)
    results: list = [None] * count

    def worker(index: int) -> None:
        try:
            barrier.wait()
            with sessions:
                try:
                    results[index] = call(index)
                finally:
                    connection.close()
        except Exception as exc:  # surfaced by the caller's assertions
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return results


def free_port() -> int:
    """A loopback TCP port nothing listens on at the moment of the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
