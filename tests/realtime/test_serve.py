"""``manage.py serve`` as ``make run`` starts it (SQLite, in-memory layer, background jobs):
a real WebSocket client receives ``market.price`` ticks published by the market job's thread.
"""

from __future__ import annotations

import pytest

from tests.realtime.servers import (
    PYTHON,
    ServerProcess,
    manage,
    server_env,
    ws_open,
    ws_receive,
    ws_request,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CREATE_TOKEN = (
    "from django.contrib.auth.models import User;"
    "from rest_framework.authtoken.models import Token;"
    "print(Token.objects.create(user=User.objects.create_user('watcher')).key)"
)


@pytest.fixture
def served(tmp_path, reference_services):
    """A migrated SQLite database of its own, a user's token, and the server on it."""
    env = server_env(
        reference_services,
        database_url=f"sqlite:///{tmp_path / 'serve.db'}",
        MARKET_TICK_MS="200",
    )

    manage("migrate", "--noinput", env=env)
    token = manage("shell", "-c", CREATE_TOKEN, env=env).strip().splitlines()[-1]
    server = ServerProcess(
        [str(PYTHON), "manage.py", "serve", "--host", "127.0.0.1", "--port", "{port}"], env
    )
    try:
        server.wait_ready()
        yield server, token
    finally:
        server.stop()


async def test_a_websocket_client_of_the_served_app_receives_market_ticks(served):
    # given a client of the running server watching the market
    server, token = served
    async with await ws_open(server, token) as client:
        answer = await ws_request(client, {"action": "subscribe", "channel": "market"})
        assert answer["type"] == "subscribed"
        # then the market job's ticks arrive, each symbol's seq increasing
        ticks = [await ws_receive(client) for _ in range(12)]
    assert {tick["event"] for tick in ticks} == {"market.price"}
    by_symbol: dict[str, list[int]] = {}
    for tick in ticks:
        by_symbol.setdefault(tick["data"]["symbol"], []).append(tick["seq"])
    assert len(by_symbol) > 1
    for seqs in by_symbol.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
