"""Rule 7: an idempotency key (header or client_order_id) makes a retry safe."""

from __future__ import annotations

import pytest

from metering.models import UsageEvent
from tests.helpers import assert_books_balance, race, submit, trades_url
from trades.models import IdempotencyRecord, Trade

ORDER = {"symbol": "AAPL", "side": "buy", "quantity": "10"}


def post(client, agent, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(trades_url(agent), body, format="json", **headers)


def test_replaying_a_key_returns_the_original_answer_and_creates_nothing(owner_client, agent):
    first = post(owner_client, agent, ORDER, key="order-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first

    replay = post(owner_client, agent, ORDER, key="order-1")

    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert Trade.objects.filter(agent=agent).count() == 1
    assert UsageEvent.objects.filter(agent=agent, code="trade_executions").count() == 1
    assert UsageEvent.objects.filter(agent=agent, code="trade_volume").count() == 1
    assert_books_balance(agent)


def test_a_replay_of_a_pending_order_answers_202_again(owner_client, agent):
    body = {"symbol": "AAPL", "side": "buy", "quantity": "150"}
    first = post(owner_client, agent, body, key="big")
    assert first.status_code == 202

    replay = post(owner_client, agent, body, key="big")

    assert replay.status_code == 202
    assert replay.json()["approval_request_id"] == first.json()["approval_request_id"]
    agent.refresh_from_db()
    assert agent.reserved_cash == 15000


def test_the_same_key_with_another_body_is_409(owner_client, agent):
    post(owner_client, agent, ORDER, key="order-1")

    response = post(owner_client, agent, {**ORDER, "quantity": "11"}, key="order-1")

    assert response.status_code == 409
    assert response.json()["type"].rstrip("/").endswith("idempotency-conflict")
    assert Trade.objects.filter(agent=agent).count() == 1


def test_client_order_id_is_a_key_too(owner_client, agent):
    body = {**ORDER, "client_order_id": "bot-42"}
    first = submit(owner_client, agent, **body)
    assert first.json()["client_order_id"] == "bot-42"

    replay = submit(owner_client, agent, **body)
    conflict = submit(owner_client, agent, **{**body, "quantity": "1"})

    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert conflict.status_code == 409
    # reusing a client_order_id under another header key is a conflict, not a second order
    assert post(owner_client, agent, body, key="another").status_code == 409
    assert Trade.objects.filter(agent=agent).count() == 1


def test_keys_are_per_agent(owner_client, agent, agent_factory):
    other = agent_factory(name="second")
    post(owner_client, agent, ORDER, key="shared")

    response = post(owner_client, other, ORDER, key="shared")

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response


def test_a_failed_request_keeps_no_key(owner_client, agent):
    too_big = {**ORDER, "quantity": "5000"}
    assert post(owner_client, agent, too_big, key="retry-me").status_code == 402
    assert not IdempotencyRecord.objects.exists()

    response = post(owner_client, agent, ORDER, key="retry-me")

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response


def test_another_owner_cannot_replay_a_key(owner_client, client_for, other_owner, agent):
    post(owner_client, agent, ORDER, key="mine")

    assert post(client_for(other_owner), agent, ORDER, key="mine").status_code == 404


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_requests_with_one_key_create_one_trade(client_for, owner, agent):
    responses = race(10, lambda _: post(client_for(owner), agent, ORDER, key="race"))

    assert [response.status_code for response in responses] == [201] * 10
    assert sum(1 for r in responses if r.get("Idempotent-Replayed") != "true") == 1
    assert len({r.json()["id"] for r in responses}) == 1
    assert Trade.objects.filter(agent=agent).count() == 1
    assert UsageEvent.objects.filter(agent=agent, code="trade_executions").count() == 1
    assert_books_balance(agent)


def test_a_numeric_client_order_id_is_the_same_key(owner_client, agent):
    body = {**ORDER, "client_order_id": 7}
    first = submit(owner_client, agent, **body)

    replay = submit(owner_client, agent, **body)

    assert first.json()["client_order_id"] == "7"
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert Trade.objects.filter(agent=agent).count() == 1


def test_a_client_order_id_used_under_a_header_key_cannot_be_reused(owner_client, agent):
    body = {**ORDER, "client_order_id": "bot-1"}
    assert post(owner_client, agent, body, key="header-key").status_code == 201

    response = submit(owner_client, agent, **body)

    assert response.status_code == 409
    assert Trade.objects.filter(agent=agent).count() == 1
