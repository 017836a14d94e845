"""`/metrics` after a scripted session: every family the runbook lists moves with real use."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import agent_url, submit
from tests.realtime.helpers import open_socket


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _total(samples: dict, name: str, **labels) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@pytest.mark.django_db(transaction=True)
async def test_metrics_move_after_a_scripted_session(
    owner, client_for, token_for, agent_factory, settings
):
    settings.OUTBOX_DELIVERY_INTERVAL_MS = 60_000  # nothing delivers the outbox meanwhile

    def session():
        from trades import market

        market.set_price("AAPL", "100.00")
        agent = agent_factory(budget="100000")
        api = client_for(owner)
        small = submit(api, agent, symbol="AAPL", side="buy", quantity="5")
        large = submit(api, agent, symbol="AAPL", side="buy", quantity="150")
        assert (small.status_code, large.status_code) == (201, 202), (small.json(), large.json())
        assert api.get(agent_url(agent, "/portfolio")).status_code == 200
        return token_for(owner)

    before = _samples(
        (await sync_to_async(lambda: client_for(owner).get("/metrics"))()).content.decode()
    )
    token = await sync_to_async(session)()
    socket, connected = await open_socket(token)
    assert connected
    try:
        response = await sync_to_async(lambda: client_for(owner).get("/metrics"))()
        after = _samples(response.content.decode())
    finally:
        await socket.disconnect()

    def moved(name: str, **labels) -> float:
        return _total(after, name, **labels) - _total(before, name, **labels)

    assert moved("trading_http_request_duration_seconds_count", method="POST") >= 2
    assert moved("trading_trades_total", status="filled") == 1
    assert moved("trading_trades_total", status="pending_approval") == 1
    assert moved("trading_grpc_calls_total", method="CheckQuota", code="OK") >= 2
    assert moved("trading_grpc_calls_total", method="SubmitRequest", code="OK") >= 2
    assert moved("trading_grpc_call_duration_seconds_sum", service="oversight") > 0
    assert _total(after, "trading_approval_queue_depth") == 1
    assert _total(after, "trading_approval_oldest_pending_age_seconds") >= 0
    assert _total(after, "trading_outbox_backlog") >= 4  # 2 orders, a fill, an approval, calls
    assert _total(after, "trading_websocket_connections") >= 1
    assert "trading_channel_layer_dropped_total" in {name for name, _ in after}
