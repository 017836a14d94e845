"""What one WebSocket connection costs the server, counted: Python function calls, SQL
statements and thread hops, measured in process.

``python -m bench.ws_calls`` (a module: run as a script, ``bench/profile.py`` would shadow the
standard library's ``profile``, which ``cProfile`` imports) creates a test database
(``DATABASE_URL``, SQLite in memory by default; the channel layer of ``REDIS_URL`` when set),
then drives the project's ASGI application (``config.asgi.application``) with Channels'
``WebsocketCommunicator`` under ``cProfile`` (the event loop's thread: the database work of a
hop runs in another thread and is counted as statements):

1. ``agent``: N connections, each opened with an API token, subscribed to one agent's
   ``trades`` and closed;
2. ``market``: the same with the market channel;
3. ``delivery``: N connections on the market channel receive M market steps
   (``publish_market_prices``): the cost per frame delivered.

The counts include the communicator's side (the test client), which is the same before and
after a change of the server, and ``cProfile`` counts each resumption of a coroutine as a
call. A few connections are opened first so that first-use work is
not counted. Prints JSON.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")

import django

django.setup()

from channels.db import database_sync_to_async  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.db import connection  # noqa: E402
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


async def _connections(token: str, subscription: dict, count: int) -> None:
    for _ in range(count):
        communicator = await _open(token, subscription)
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


def _hops(stats: pstats.Stats) -> int:
    """Hops to a worker thread: asgiref's ``SyncToAsync`` hands each call to an executor with
    ``loop.run_in_executor`` (counting the coroutine itself would count its resumptions too)."""
    code = asyncio.BaseEventLoop.run_in_executor.__code__
    return sum(
        calls
        for (filename, line, name), (calls, *_rest) in stats.stats.items()
        if (filename, line, name) == (code.co_filename, code.co_firstlineno, code.co_name)
    )


async def _measure(name: str, work, units: int) -> dict:
    global statements
    statements = 0
    profile = cProfile.Profile()
    profile.enable()
    await work()
    profile.disable()
    stats = pstats.Stats(profile)
    return {
        "scenario": name,
        "units": units,
        "calls_per_unit": round(stats.total_calls / units, 1),
        "statements_per_unit": round(statements / units, 2),
        "thread_hops_per_unit": round(_hops(stats) / units, 2),
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
            "calls_per_unit": round(frames["calls_per_unit"] - setup["calls_per_unit"], 1),
            "statements_per_unit": round(
                frames["statements_per_unit"] - setup["statements_per_unit"], 2
            ),
            "thread_hops_per_unit": round(
                frames["thread_hops_per_unit"] - setup["thread_hops_per_unit"], 2
            ),
        }
    )
    await layer.flush()
    print(json.dumps({"database": connection.vendor, "results": results}, indent=2))


if __name__ == "__main__":
    setup_test_environment()
    connection_created.connect(_install_counter)
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        asyncio.run(main())
    finally:
        connection.creation.destroy_test_db(test_name, verbosity=0)
