"""The cost of the hot path: an auto-approved market order, pinned in SQL statements and gRPC
calls (docs/performance.md records the counts over time)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from metering.models import UsageEvent
from observability.metrics import grpc_call_counts
from realtime.models import AgentEventBatch
from tests.helpers import (
    buffered_events,
    generic_plan,
    sent_statements,
    submit,
    usage_of_a_busy_day,
)
from trades.models import Trade

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK")


# What an auto-approved market order of an agent already holding the symbol does in SQL, besides
# the transaction's BEGIN/COMMIT: (statement, table) each, in any order.
# The client's token is answered by the token cache (api.authentication), as in production
# once the client has made a request.
ORDER_STATEMENTS = sorted(
    [
        # the checks made before the gRPC decisions, outside the agent's lock: the agent with
        # its usage not yet delivered (quota) and that symbol's price (subqueries), and its
        # position in the order's symbol (joined)
        ("SELECT", "agents_agent"),
        # under the agent's lock
        ("SELECT", "agents_agent"),  # the agent, locked, with its orders of the day
        ("SELECT", "agents_position"),  # its positions, locked, with their symbols' prices
        ("INSERT", "trades_trade"),  # the order, inserted filled
        ("UPDATE", "agents_position"),
        ("INSERT", "trades_fill"),
        ("UPDATE", "agents_agent"),  # balances, the day's order count, the event counter
        ("INSERT", "metering_usageevent"),  # trade_executions, trade_volume, api_calls
        # trade.created, trade.filled, portfolio.update: one row of the event buffer
        ("INSERT", "realtime_agenteventbatch"),
    ]
)


def _outermost(sql: str) -> str:
    """The statement without what is in parentheses (its subqueries among them)."""
    depth, kept = 0, []
    for char in sql:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            kept.append(char)
    return "".join(kept)


def _touches(sql: str) -> tuple[str, str]:
    verb = sql.split(None, 1)[0].upper()
    pattern = r'^UPDATE\s+"?(\w+)' if verb == "UPDATE" else r'\b(?:FROM|INTO)\s+"?(\w+)'
    match = re.search(pattern, _outermost(sql), re.IGNORECASE)
    return verb, match.group(1) if match else sql


def test_an_auto_approved_market_order_costs_9_statements_and_2_grpc_calls(
    token_cache, owner_client, agent
):
    # given an agent that already holds a position (its second order of a symbol updates it),
    # and its owner's token cached by that first order
    assert submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1").status_code == 201
    before = grpc_call_counts()

    # when it places another market order
    with CaptureQueriesContext(connection) as queries:
        response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="2")

    # then it filled with these 9 statements (no portfolio snapshot: market ticks take them)
    # and the two gRPC decisions: CheckQuota and SubmitRequest
    assert response.status_code == 201
    assert response.json()["status"] == "filled"
    statements = [q["sql"] for q in queries.captured_queries]
    data = [sql for sql in statements if not sql.upper().startswith(TRANSACTION_CONTROL)]
    assert sorted(_touches(sql) for sql in data) == ORDER_STATEMENTS, "\n".join(data)
    (pending_read,) = [sql for sql in data if sql.startswith("SELECT") and "usageevent" in sql]
    assert _touches(pending_read) == ("SELECT", "agents_agent")
    assert "agents_position" in pending_read and "trades_marketprice" in pending_read
    (positions_read,) = [sql for sql in data if _touches(sql) == ("SELECT", "agents_position")]
    assert "trades_marketprice" in positions_read
    if connection.features.has_select_for_update_of:
        # the positions are locked, the price rows only read
        assert positions_read.endswith('FOR UPDATE OF "agents_position"'), positions_read
    after = grpc_call_counts()
    made = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert made == {"metering/CheckQuota": 1, "oversight/SubmitRequest": 1}


def test_the_order_still_records_everything_it_did(owner_client, agent):
    # given / when
    response = submit(owner_client, agent, symbol="MSFT", side="buy", quantity="3")

    # then the one INSERT of usage holds the order, its volume and the request's api call
    trade = Trade.objects.get(pk=response.json()["id"])
    codes = sorted(UsageEvent.objects.filter(agent=agent).values_list("code", flat=True))
    assert codes == ["api_calls", "trade_executions", "trade_volume"]
    # and the events, in seq order, show the order as accepted, then filled, then the portfolio
    events = buffered_events(agent)
    assert [e.event for e in events] == ["trade.created", "trade.filled", "portfolio.update"]
    (batch,) = AgentEventBatch.objects.filter(agent=agent)
    assert (batch.first_seq, batch.last_seq) == (events[0].seq, events[-1].seq)
    assert [e.seq for e in events] == [events[0].seq, events[0].seq + 1, events[0].seq + 2]
    created, filled = events[0].data, events[1].data
    assert created["status"] == "open" and created["filled_at"] is None
    assert created["created_at"] == filled["created_at"] == response.json()["created_at"]
    assert filled == response.json()
    agent.refresh_from_db()
    assert agent.event_seq == events[-1].seq
    assert trade.status == "filled"


@pytest.mark.postgres
def test_the_orders_agent_read_sums_its_pending_usage_through_the_partial_index(
    owner_client, agent
):
    # given: an agent's busy day of delivered usage, and the statement that reads the agent
    # before its lock
    usage_of_a_busy_day(agent)
    sent = sent_statements(
        lambda: submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1")
    )
    (agent_read, *_) = [
        (sql, params) for sql, params in sent if sql.startswith('SELECT "agents_agent"')
    ]
    assert "metering_usageevent" in agent_read[0]

    # when: PostgreSQL plans it once for any parameter values, as it may after a few runs
    plan = generic_plan(*agent_read)

    # then: its sum reads only the rows still in the outbox
    assert "usage_pending_by_agent" in plan, plan
