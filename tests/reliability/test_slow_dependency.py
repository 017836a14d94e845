"""A slow dependency delays only the orders that need it (PostgreSQL, real threads).

The metering or oversight reference server is slowed (every call waits before answering),
with a gRPC deadline longer than the wait so the orders succeed. An order asks both services
before it takes its agent's row lock, so the agent's other operations — here the operator's
kill switch — and the agent's other orders do not queue behind its network call; the order
re-validates under the lock, and an oversight request it no longer needs is closed.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from grpc_clients.registry import get_oversight_client
from oversight.models import ApprovalRequest
from tests.helpers import NO_APPROVAL, agent_url, assert_books_balance, race, trades_url
from trades.models import Trade

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

DELAY_SECONDS = 1.5


@pytest.fixture
def long_deadline(settings):
    """A deadline the slowed service answers within: the orders wait, then succeed."""
    settings.GRPC_TIMEOUT_SECONDS = DELAY_SECONDS + 3.0


def _in_thread(call) -> tuple[threading.Thread, dict]:
    """Run ``call`` in a thread; the dict gets its result and the moment it returned."""
    out: dict = {}

    def run():
        try:
            out["result"] = call()
        except Exception as exc:  # surfaced by the assertions
            out["result"] = exc
        finally:
            out["done"] = time.monotonic()
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_the_kill_switch_does_not_wait_for_an_order_stuck_on_a_slow_oversight_service(
    fresh_reference_services, long_deadline, client_for, owner, operator, agent_factory, prices
):
    # given: an order that needs a human (20,000 ≥ the 10,000 auto-approval limit) is waiting
    # on a slowed oversight service
    agent = agent_factory(budget="100000")
    fresh_reference_services.oversight.delay_seconds = DELAY_SECONDS
    order = {"symbol": "AAPL", "side": "buy", "quantity": "200"}
    placing, placed = _in_thread(
        lambda: client_for(owner).post(trades_url(agent), order, format="json")
    )
    time.sleep(0.4)

    # when: the operator terminates the agent meanwhile
    response = client_for(operator).delete(agent_url(agent))
    killed = time.monotonic()
    placing.join(30)

    # then: the kill switch answered at once, before the order, which the agent's new
    # status refused under the lock; nothing of the order is kept
    assert response.status_code in (200, 204), response.content
    assert killed < placed["done"], "the kill switch waited for the order's network call"
    refused = placed["result"]
    assert refused.status_code == 409, refused.content
    assert refused.json()["type"].rstrip("/").endswith("agent-not-active")
    assert not Trade.objects.filter(agent=agent).exists()
    assert not ApprovalRequest.objects.filter(agent=agent).exists()
    agent.refresh_from_db()
    assert agent.status == "terminated"
    assert agent.reserved_cash == Decimal("0")
    # and the request the order had submitted is not left pending on the service
    fresh_reference_services.oversight.delay_seconds = 0
    remote = get_oversight_client().list_requests(tenant_id=str(owner.pk), states=["pending"])
    assert remote.total_count == 0
    assert get_oversight_client().list_requests(tenant_id=str(owner.pk)).total_count == 1


def test_orders_of_one_agent_wait_on_a_slow_metering_service_together_not_in_turn(
    fresh_reference_services, long_deadline, client_for, owner, agent_factory, prices
):
    # given: a slowed metering service
    agent = agent_factory(budget="100000", config=NO_APPROVAL)
    fresh_reference_services.metering.delay_seconds = DELAY_SECONDS
    clients = [client_for(owner) for _ in range(3)]
    order = {"symbol": "AAPL", "side": "buy", "quantity": "10"}

    # when: three orders of the same agent arrive at once
    started = time.monotonic()
    responses = race(3, lambda i: clients[i].post(trades_url(agent), order, format="json"))
    elapsed = time.monotonic() - started

    # then: all filled, in about one wait rather than three in turn
    assert [getattr(r, "status_code", r) for r in responses] == [201, 201, 201]
    assert elapsed < 2 * DELAY_SECONDS, f"{elapsed:.2f} s: the orders waited in turn"
    agent.refresh_from_db()
    assert agent.cash_balance == Decimal("97000.00")
    assert_books_balance(agent)


def test_an_order_refused_under_the_lock_leaves_no_request_pending_on_the_oversight_service(
    fresh_reference_services, long_deadline, client_for, owner, agent_factory, prices
):
    # given: two orders that each need a human and that cash covers only one of, both
    # checked before either takes the lock (the oversight service is slow)
    agent = agent_factory(budget="100000", config={**NO_APPROVAL, "auto_approval_limit": "10000"})
    fresh_reference_services.oversight.delay_seconds = 0.5
    clients = [client_for(owner) for _ in range(2)]
    order = {"symbol": "AAPL", "side": "buy", "quantity": "600"}

    # when
    responses = race(2, lambda i: clients[i].post(trades_url(agent), order, format="json"))

    # then: one waits for approval, one is refused for funds
    assert sorted(getattr(r, "status_code", r) for r in responses) == [202, 402]
    fresh_reference_services.oversight.delay_seconds = 0
    # and the service holds exactly the one pending request the server holds
    kept = ApprovalRequest.objects.get(agent=agent)
    pending = get_oversight_client().list_requests(tenant_id=str(owner.pk), states=["pending"])
    assert pending.total_count == 1
    assert get_oversight_client().get_request_status(str(kept.pk)).state == "pending"
    assert_books_balance(agent)
