"""Client usage ids are the client's own: scoped to the agent, never the server's.

An owner may send any ``transaction_id`` on ``POST /metering/events``. Tried here as an owner who
wants to escape governance: every id the server writes for its own usage (the kill switch, a
fill, an order, a quota configuration), in the old and the current form, is claimed first; the
kill switch, a fill and an approval still succeed, and their usage reaches the metering service
as new events, not as duplicates of the owner's.
"""

from __future__ import annotations

import pytest

from metering.models import UsageEvent
from metering.services import usage_deliver_pending
from tests.helpers import agent_url, trades_url
from trades import market
from trades.models import Trade
from trades.services import orders_match

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/metering/events"


def claim(client, agent, transaction_id: str, code: str = "custom"):
    body = {
        "agent_id": str(agent.pk),
        "event_type": "api_call",
        "code": code,
        "quantity": 1,
        "transaction_id": transaction_id,
    }
    response = client.post(EVENTS, body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def claim_every_server_id(client, agent, subject) -> None:
    """Claim, on the agent, each id the server derives from ``subject`` (an agent or trade id),
    as the server wrote it before and as it writes it now, under every metric code."""
    for kind in ("agent_terminated", "trade_volume", "trade_executions", "oversight_requests"):
        for form in (f"{kind}:{subject}", f"server:{kind}:{subject}"):
            claim(client, agent, form, code=kind)


def test_the_kill_switch_stops_an_agent_whatever_its_owner_claimed_in_usage(
    agent_factory, owner_client, operator, client_for, aapl_at_100
):
    # given: an agent with a resting order, whose owner claimed every id of the server's
    agent = agent_factory()
    order = owner_client.post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "5", "type": "limit", "limit_price": "90"},
        format="json",
    )
    assert order.status_code == 201 and order.json()["status"] == "open"
    claim_every_server_id(owner_client, agent, agent.pk)
    claim_every_server_id(owner_client, agent, order.json()["id"])

    # when: the operator pulls the kill switch
    response = client_for(operator).delete(agent_url(agent))

    # then: the agent is stopped, its order cancelled, its cash released
    assert response.status_code == 204
    agent.refresh_from_db()
    assert agent.status == "terminated"
    assert agent.reserved_cash == 0
    assert Trade.objects.get(pk=order.json()["id"]).status == "cancelled"
    # and the termination is metered, as an event of the server's that the service takes as new
    usage_deliver_pending(ignore_backoff=True)
    termination = UsageEvent.objects.get(
        agent=agent, code="agent_terminations", client_transaction_id=None
    )
    assert (termination.delivery_state, termination.ingest_status) == ("delivered", "accepted")
    assert not UsageEvent.objects.filter(ingest_status="duplicate").exists()


def test_a_resting_order_fills_whatever_its_owner_claimed_in_usage(
    agent_factory, owner_client, aapl_at_100
):
    # given: a resting limit buy, and its trade's ids claimed by its owner
    agent = agent_factory()
    order = owner_client.post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "5", "type": "limit", "limit_price": "90"},
        format="json",
    )
    trade_id = order.json()["id"]
    claim_every_server_id(owner_client, agent, trade_id)

    # when: the market crosses its limit
    market.set_price("AAPL", "89.00")
    filled = orders_match()

    # then: it fills, and its volume is metered once, delivered as a new event
    assert filled == 1
    assert Trade.objects.get(pk=trade_id).status == "filled"
    agent.refresh_from_db()
    assert agent.reserved_cash == 0
    usage_deliver_pending(ignore_backoff=True)
    (volume,) = UsageEvent.objects.filter(
        agent=agent, code="trade_volume", client_transaction_id=None
    )
    assert (volume.quantity, volume.ingest_status) == (445, "accepted")
    assert not UsageEvent.objects.filter(ingest_status="duplicate").exists()


def test_an_approval_executes_whatever_the_owner_claimed_in_usage(
    agent_factory, owner_client, operator, client_for, aapl_at_100
):
    # given: an order waiting for an operator, its ids claimed by the owner
    agent = agent_factory()
    order = owner_client.post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "200"},
        format="json",
    )
    assert order.status_code == 202, order.content
    trade = order.json()
    claim_every_server_id(owner_client, agent, trade["id"])

    # when: the operator approves
    response = client_for(operator).post(
        f"/api/v1/oversight/requests/{trade['approval_request_id']}/approve", {}, format="json"
    )

    # then: the order fills and its volume is metered
    assert response.status_code == 200, response.content
    assert Trade.objects.get(pk=trade["id"]).status == "filled"
    assert UsageEvent.objects.filter(
        agent=agent, code="trade_volume", client_transaction_id=None, quantity=20000
    ).exists()


def test_a_client_transaction_id_is_scoped_to_its_agent_and_reveals_nothing_of_other_tenants(
    agent_factory, owner_client, other_owner, client_for
):
    # given: two tenants' agents
    mine = agent_factory()
    theirs = agent_factory(user=other_owner)
    their_client = client_for(other_owner)

    # when: both use the same transaction_id, each twice
    first_mine = claim(owner_client, mine, "shared-id")
    first_theirs = claim(their_client, theirs, "shared-id")
    again_mine = claim(owner_client, mine, "shared-id")
    again_theirs = claim(their_client, theirs, "shared-id")

    # then: the other tenant's id is neither refused nor revealed; each sees its own repeat
    assert first_mine == {"transaction_id": "shared-id", "status": "accepted"}
    assert first_theirs == {"transaction_id": "shared-id", "status": "accepted"}
    assert again_mine == {"transaction_id": "shared-id", "status": "duplicate"}
    assert again_theirs == {"transaction_id": "shared-id", "status": "duplicate"}
    assert UsageEvent.objects.filter(client_transaction_id="shared-id").count() == 2
    # and the metering service counts both: their ids on the wire differ
    usage_deliver_pending(ignore_backoff=True)
    statuses = UsageEvent.objects.filter(client_transaction_id="shared-id").values_list(
        "ingest_status", flat=True
    )
    assert sorted(statuses) == ["accepted", "accepted"]


def test_a_client_id_and_a_server_id_never_share_a_wire_id(agent_factory, owner_client):
    # given: an agent whose owner sent, as its own id, the wire id of another of its events
    agent = agent_factory()
    first = claim(owner_client, agent, "plain")
    wire_id = UsageEvent.objects.get(agent=agent, client_transaction_id="plain").transaction_id

    # when
    echoed = claim(owner_client, agent, wire_id)

    # then: it is a new event of the client's, under a wire id of its own
    assert first["status"] == echoed["status"] == "accepted"
    ids = list(UsageEvent.objects.filter(agent=agent).values_list("transaction_id", flat=True))
    assert len(ids) == len(set(ids)) == 2
    assert all(tid.startswith(f"client:{agent.pk}:") for tid in ids)
