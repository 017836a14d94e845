"""What one WebSocket connection costs the server, counted: Python function calls, SQL
statements and thread hops, measured in process.

``python bench/ws_calls.py`` creates a test database (``DATABASE_URL``, SQLite in memory by
default; the channel layer of ``REDIS_URL`` when set), then drives the project's ASGI
application (``config.asgi.application``) with Channels' ``WebsocketCommunicator``:

1. ``agent``: N connections, each opened with an API token, subscribed to one agent's
   ``trades`` and closed;
2. ``agent, three channels``: the same with the agent's three channels (a dashboard);
3. ``market``: the same with the market channel;
4. ``delivery``: N connections on the market channel receive M market steps
   (``publish_market_prices``): the cost per frame delivered.

Calls are counted with a profile hook in every thread (``threading.setprofile_all_threads``):
those of the event loop's thread, and those of the worker threads where ``sync_to_async``
runs the database work (each resumption of a coroutine counts as a call). A thread hop is a
call of ``loop.run_in_executor``, through which asgiref's ``SyncToAsync`` hands each call to
its thread. The counts include the communicator's side (the test client), the same before and
after a change of the server. A few connections are opened first so that first-use work is
not counted. Channels' communicator stubs out ``close_old_connections`` while it waits for the
application, so the database thread's closing work is mostly left out, before and after a
change alike. Prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")

import django

django.setup()

from channels.db import database_sync_to_async  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.db import close_old_connections, connection  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

CONNECTIONS = 50
STEPS = 20
HEADERS = [(b"host", b"testserver"), (b"origin", b"http://testserver")]

statements = 0


def _count(execute, sql, params, many, context):
    global statements
    statements += 1
    return execute(sql, params, many, context)


def _install_counter(sender, connection, **kwargs):
    # Sent at each connect, a pooled one too; the wrapper list belongs to the thread's wrapper.
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


@database_sync_to_async
def _seed():
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from agents.models import Agent

    user = get_user_model().objects.create_user("watcher", password="x" * 12)
    agent = Agent.objects.create(
        owner=user, name="Watched", budget=Decimal(1000), cash_balance=Decimal(1000)
    )
    return Token.objects.create(user=user).key, str(agent.pk)


async def _open(token: str, subscription: dict) -> WebsocketCommunicator:
    from config.asgi import application

    communicator = WebsocketCommunicator(application, f"/ws/?token={token}", headers=HEADERS)
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    await communicator.send_json_to({"action": "subscribe", **subscription})
    answer = await communicator.receive_json_from(timeout=10)
    assert answer["type"] == "subscribed", answer
    return communicator


async def _connections(token: str, subscription: dict, count: int, *, also=()) -> None:
    for _ in range(count):
        communicator = await _open(token, subscription)
        for channel in also:
            await communicator.send_json_to({"action": "subscribe", **subscription, **channel})
            answer = await communicator.receive_json_from(timeout=10)
            assert answer["type"] == "subscribed", answer
        await communicator.disconnect()


async def _delivery(token: str, count: int, steps: int) -> None:
    from realtime.services import publish_market_prices

    watchers = [await _open(token, {"channel": "market"}) for _ in range(count)]
    for step in range(steps):
        publish_market_prices([("AAPL", Decimal("100.00") + step, step + 1)])
        for communicator in watchers:
            frame = await communicator.receive_json_from(timeout=10)
            assert frame["seq"] == step + 1, frame
    for communicator in watchers:
        await communicator.disconnect()


class Counter:
    """Python and C function calls of the event loop's thread and of the others, and the hops
    to a worker thread (each counter is written by one kind of thread only)."""

    hop = asyncio.BaseEventLoop.run_in_executor.__code__

    def __init__(self):
        self.loop_thread = threading.get_ident()
        self.loop_calls = self.other_calls = self.hops = 0

    def __call__(self, frame, event, arg):
        if event not in ("call", "c_call"):
            return
        if threading.get_ident() != self.loop_thread:
            self.other_calls += 1
            return
        self.loop_calls += 1
        if event == "call" and frame.f_code is self.hop:
            self.hops += 1


async def _measure(name: str, work, units: int) -> dict:
    global statements
    statements = 0
    counter = Counter()
    threading.setprofile_all_threads(counter)
    try:
        await work()
    finally:
        threading.setprofile_all_threads(None)
    return {
        "scenario": name,
        "units": units,
        "calls_per_unit": round((counter.loop_calls + counter.other_calls) / units, 1),
        "loop_thread_calls_per_unit": round(counter.loop_calls / units, 1),
        "worker_thread_calls_per_unit": round(counter.other_calls / units, 1),
        "statements_per_unit": round(statements / units, 2),
        "thread_hops_per_unit": round(counter.hops / units, 2),
    }


async def main() -> None:
    layer = get_channel_layer()
    await layer.flush()
    token, agent = await _seed()
    trades = {"channel": "trades", "agent_id": agent}
    market = {"channel": "market"}
    # First use (imports, compiled queries, the layer's connections) is not per connection.
    await _connections(token, trades, 3)
    await _connections(token, market, 3)
    await _delivery(token, 2, 2)
    results = [
        await _measure(
            "agent: connect, subscribe trades, close",
            lambda: _connections(token, trades, CONNECTIONS),
            CONNECTIONS,
        ),
        await _measure(
            "agent, three channels: connect, subscribe its portfolio, trades, oversight, close",
            lambda: _connections(
                token,
                {**trades, "channel": "portfolio"},
                CONNECTIONS,
                also=({"channel": "trades"}, {"channel": "oversight"}),
            ),
            CONNECTIONS,
        ),
        await _measure(
            "market: connect, subscribe market, close",
            lambda: _connections(token, market, CONNECTIONS),
            CONNECTIONS,
        ),
    ]
    # Per frame: the connections' own connect and close, measured apart, are subtracted.
    setup = await _measure(
        "delivery setup", lambda: _delivery(token, CONNECTIONS, 0), CONNECTIONS * STEPS
    )
    frames = await _measure(
        "delivery", lambda: _delivery(token, CONNECTIONS, STEPS), CONNECTIONS * STEPS
    )
    results.append(
        {
            "scenario": f"per market frame delivered ({CONNECTIONS} watchers x {STEPS} steps)",
            "units": CONNECTIONS * STEPS,
            **{
                key: round(frames[key] - setup[key], 2)
                for key in frames
                if key.endswith("_per_unit")
            },
        }
    )
    await layer.flush()
    # Channels' communicator stubs out the closing of database connections while it waits
    # (so that a test's transaction survives): close the database thread's one now.
    await database_sync_to_async(close_old_connections)()
    print(json.dumps({"database": connection.vendor, "results": results}, indent=2))


if __name__ == "__main__":
    setup_test_environment()
    connection_created.connect(_install_counter)
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        asyncio.run(main())
    finally:
        connection.creation.destroy_test_db(test_name, verbosity=0)
