"""One request id from the HTTP caller to both gRPC services' logs."""

from __future__ import annotations

import logging

import pytest

from tests.helpers import trades_url

pytestmark = pytest.mark.django_db


def test_order_request_id_reaches_metering_and_oversight_logs(
    owner_client, agent_factory, caplog, fresh_reference_services
):
    # given: services in this process, whose logs the test reads
    agent = agent_factory()
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="reference_services")
    # when
    response = owner_client.post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "1"},
        format="json",
        HTTP_X_REQUEST_ID="order-req-7f3a",
    )
    # then
    assert response.status_code == 201, response.content
    assert response["X-Request-ID"] == "order-req-7f3a"
    lines = {(r.name, r.getMessage()) for r in caplog.records}
    assert ("reference_services.metering", "CheckQuota request_id=order-req-7f3a") in lines
    assert ("reference_services.oversight", "SubmitRequest request_id=order-req-7f3a") in lines
    access = [r for r in caplog.records if r.name == "trading_demo.access"]
    assert any(getattr(r, "request_id", None) == "order-req-7f3a" for r in access)


def test_one_log_line_per_request_and_grpc_calls_below_info(owner_client, agent_factory, caplog):
    # given: the server logging at INFO, as it does by default
    agent = agent_factory()
    caplog.set_level(logging.INFO)
    missing = "00000000-0000-4000-8000-000000000000"

    # when: an order (two gRPC calls) and a request that answers 404
    placed = owner_client.post(
        trades_url(agent),
        {"symbol": "AAPL", "side": "buy", "quantity": "1"},
        format="json",
    )
    missed = owner_client.get(f"/api/v1/agents/{missing}")

    # then: one line each, and no line per gRPC call
    assert (placed.status_code, missed.status_code) == (201, 404)
    about_the_404 = [r for r in caplog.records if missing in r.getMessage()]
    assert [r.name for r in about_the_404] == ["trading_demo.access"]
    assert not [r for r in caplog.records if r.name.startswith("reference_services")]
