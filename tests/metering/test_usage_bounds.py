"""Usage quantities are bounded, and an agent's usage sums cannot overflow.

A quantity of 2**62 was accepted on ``POST /metering/events``; three of them overflowed the
sums: the agent's orders answered 503 and its usage 500, for the operator too.
"""

from __future__ import annotations

import pytest

from metering.services import usage_record
from tests.helpers import trades_url
from trades import market

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/metering/events"


def event(agent, quantity) -> dict:
    return {"agent_id": str(agent.pk), "event_type": "input_tokens", "code": "llm_tokens",
            "quantity": quantity}  # fmt: skip


def test_a_usage_quantity_beyond_the_bound_is_refused_naming_it(agent_factory, owner_client):
    agent = agent_factory()

    refused = owner_client.post(EVENTS, event(agent, 2**62), format="json")
    at_bound = owner_client.post(EVENTS, event(agent, 10**12), format="json")

    assert refused.status_code == 400
    body = refused.json()
    assert body["type"].rstrip("/").endswith("validation-error")
    assert any("1000000000000" in message for message in body["errors"]["quantity"]), body
    assert at_bound.status_code == 202


def test_an_agents_usage_sums_never_overflow(agent_factory, owner_client, operator, client_for):
    # given: usage whose sum is past a 64-bit integer (quantities recorded before the bound)
    market.set_price("AAPL", "100.00")
    agent = agent_factory()
    for _ in range(3):
        usage_record(agent=agent, code="trade_executions", quantity=2**62, symbol="AAPL")
        usage_record(agent=agent, code="llm_tokens", quantity=2**62)

    # when
    mine = owner_client.get(f"/api/v1/metering/agents/{agent.pk}/usage?period=monthly")
    operators = client_for(operator).get(f"/api/v1/metering/agents/{agent.pk}/usage")
    quota = owner_client.get(f"/api/v1/metering/agents/{agent.pk}/quota")
    order = owner_client.post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "1"},
        format="json",
    )

    # then: the sums are exact, and the order is refused by the quota it is over
    assert mine.status_code == 200, mine.content
    assert mine.json()["trades"] == 3 * 2**62
    assert mine.json()["breakdown"]["by_symbol"]["AAPL"]["trades"] == 3 * 2**62
    assert operators.status_code == 200
    assert quota.status_code == 200, quota.content
    used = {q["metric_code"]: q["used"] for q in quota.json()["quotas"]}
    assert used["trade_executions"] == 3 * 2**62
    assert order.status_code == 429, order.content
    assert order.json()["type"].rstrip("/").endswith("quota-exceeded")
