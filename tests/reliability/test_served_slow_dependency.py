"""A slow dependency delays only the orders, through the production HTTP server.

gunicorn runs as production runs it (``config/gunicorn.conf.py``, threaded workers, here one
worker of two threads so that a handful of orders is more than its threads), on the test's
PostgreSQL, against the real reference metering server of this test, which is slowed so that
every ``CheckQuota`` waits. Orders placed meanwhile — more than the worker has threads — must
not take liveness and reads down with them: ``/health/live`` and ``GET /agents`` answer 200
while orders are still waiting on metering, and every order then answers (201 once metering
replies, or 503 with ``Retry-After``) within its deadline. Runs only on PostgreSQL, which the
server process shares with the test.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import NO_APPROVAL
from tests.realtime.servers import (
    ServerProcess,
    gunicorn_command,
    server_env,
    shared_database_url,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(120),
]

WORKER_THREADS = 2
ORDERS = 2 * WORKER_THREADS
DEADLINE_SECONDS = 3.0
METERING_DELAY_SECONDS = 1.5
# What an answer may take beyond the gRPC deadline: the rest of the order's work on a
# loaded machine, not a latency target.
ANSWER_SLACK_SECONDS = 2.0


@pytest.fixture
def gunicorn(fresh_reference_services):
    """gunicorn with the production configuration: one worker, ``WORKER_THREADS`` threads."""
    env = server_env(
        fresh_reference_services,
        database_url=shared_database_url(),
        WEB_CONCURRENCY="1",
        WEB_THREADS=str(WORKER_THREADS),
        GRPC_TIMEOUT_SECONDS=str(DEADLINE_SECONDS),
    )
    web = ServerProcess(gunicorn_command(), env)
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


def _call(url: str, token: str | None = None, body: dict | None = None) -> dict:
    """One HTTP request; its status, headers, body and the moments it was sent and answered."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the test
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
        method="POST" if body is not None else "GET",
    )
    sent = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            status, answer_headers, content = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, answer_headers, content = error.code, error.headers, error.read()
    return {
        "status": status,
        "headers": answer_headers,
        "body": json.loads(content or b"{}"),
        "sent": sent,
        "answered": time.monotonic(),
    }


def _in_thread(call) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        out.update(call())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _wait_until(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_liveness_and_reads_answer_while_more_orders_than_request_threads_wait_on_slow_metering(
    gunicorn, fresh_reference_services, owner, agent_factory, prices, token_for
):
    # given: an agent whose orders need no human, and a metering service whose every call
    # waits before answering
    agent = agent_factory(budget="100000", config=NO_APPROVAL)
    token = token_for(owner)
    orders_url = f"{gunicorn.http}/api/v1/agents/{agent.pk}/trades"
    metering = fresh_reference_services.metering
    metering.delay_seconds = METERING_DELAY_SECONDS

    # when: more orders than the worker has request threads are placed at once
    orders = [
        _in_thread(
            lambda: _call(orders_url, token, {"symbol": "AAPL", "side": "buy", "quantity": "1"})
        )
        for _ in range(ORDERS)
    ]
    assert _wait_until(lambda: metering.calls_waiting > 0), "no order reached metering"

    # then: liveness and an authenticated read answer while orders still wait on metering
    live = _call(f"{gunicorn.http}/health/live")
    agents = _call(f"{gunicorn.http}/api/v1/agents", token)
    still_waiting = metering.calls_waiting
    assert live["status"] == 200, live
    assert agents["status"] == 200, agents
    assert [row["id"] for row in agents["body"]["results"]] == [str(agent.pk)]
    assert still_waiting > 0, "liveness and reads answered only once metering had replied"

    # and every order answers within its deadline: placed once metering replies, or 503
    # with Retry-After (nothing kept)
    for thread, _ in orders:
        thread.join(30)
    answers = [out for _, out in orders]
    assert all(out["status"] in (201, 503) for out in answers), [a["body"] for a in answers]
    assert any(out["status"] == 201 for out in answers), "no order waited for metering"
    for out in answers:
        assert out["answered"] - out["sent"] < DEADLINE_SECONDS + ANSWER_SLACK_SECONDS, out
        if out["status"] == 503:
            assert out["headers"]["Content-Type"] == "application/problem+json"
            assert int(out["headers"]["Retry-After"]) > 0
    assert live["answered"] < max(out["answered"] for out in answers)
    placed = {out["body"]["id"] for out in answers if out["status"] == 201}
    from trades.models import Trade

    assert set(map(str, Trade.objects.filter(agent=agent).values_list("id", flat=True))) == {
        str(trade_id) for trade_id in placed
    }
