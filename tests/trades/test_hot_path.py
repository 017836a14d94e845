"""The cost of the hot path: an auto-approved market order, pinned in SQL and gRPC calls."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.metrics import grpc_call_counts
from metering.models import UsageEvent
from realtime.models import AgentEvent
from tests.trades.conftest import submit
from trades.models import Trade

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK")


def test_an_auto_approved_market_order_costs_at_most_15_queries_and_2_grpc_calls(
    owner_client, agent, django_assert_max_num_queries
):
    # given an agent that already holds a position (its second order of a symbol updates it)
    assert submit(owner_client, agent, symbol="AAPL", side="buy", quantity="1").status_code == 201
    before = grpc_call_counts()

    # when it places another market order
    with (
        django_assert_max_num_queries(17),
        CaptureQueriesContext(connection) as queries,
    ):
        response = submit(owner_client, agent, symbol="AAPL", side="buy", quantity="2")

    # then it filled, with 15 queries besides the transaction's BEGIN/COMMIT (token; before
    # the agent's lock, for the checks made before the gRPC calls: agent, undelivered usage,
    # positions, prices; under it: agent lock, the day's orders (daily_trade_limit),
    # positions, trade, position, fill, snapshot, agent, usage rows, events) and the two gRPC
    # decisions: CheckQuota and SubmitRequest
    assert response.status_code == 201
    assert response.json()["status"] == "filled"
    statements = [q["sql"] for q in queries.captured_queries]
    data = [sql for sql in statements if not sql.upper().startswith(TRANSACTION_CONTROL)]
    assert len(data) <= 15, "\n".join(data)
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
    events = list(AgentEvent.objects.filter(agent=agent).order_by("seq"))
    assert [e.event for e in events] == ["trade.created", "trade.filled", "portfolio.update"]
    assert [e.seq for e in events] == [events[0].seq, events[0].seq + 1, events[0].seq + 2]
    created, filled = events[0].data, events[1].data
    assert created["status"] == "open" and created["filled_at"] is None
    assert created["created_at"] == filled["created_at"] == response.json()["created_at"]
    assert filled == response.json()
    agent.refresh_from_db()
    assert agent.event_seq == events[-1].seq
    assert trade.status == "filled"
