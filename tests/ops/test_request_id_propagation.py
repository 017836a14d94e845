"""One request id from the HTTP caller to both gRPC services' logs."""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.django_db


def test_order_request_id_reaches_metering_and_oversight_logs(owner_client, agent_factory, caplog):
    # given
    agent = agent_factory()
    caplog.set_level(logging.INFO)
    # when
    response = owner_client.post(
        f"/api/v1/agents/{agent.pk}/trades",
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
