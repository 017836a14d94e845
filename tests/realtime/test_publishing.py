"""Publishing from a process that serves no WebSockets (gunicorn's workers, the jobs): the sends
of every thread share the process's Redis connection instead of opening one per send.

Runs only with ``REDIS_URL`` set (the Redis channel layer).
"""

from __future__ import annotations

import threading

import pytest
import redis
from django.conf import settings

from realtime.services import publish_market_prices

pytestmark = pytest.mark.redis


def publishing_clients(client: redis.Redis) -> set[str]:
    """The ids of the clients of the test's Redis database whose last command was PUBLISH."""
    db = str(client.connection_pool.connection_kwargs.get("db", 0))
    return {c["id"] for c in client.client_list() if c["db"] == db and c["cmd"] == "publish"}


@pytest.fixture
def fresh_layer(settings):
    """The shipped Redis layer under a prefix of its own: a new layer, whose connections are
    opened by this test's sends only (an earlier layer's may still be open in this process)."""
    default = settings.CHANNEL_LAYERS["default"]
    config = {**default["CONFIG"], "prefix": f"{default['CONFIG']['prefix']}:publishing-test"}
    settings.CHANNEL_LAYERS = {"default": {**default, "CONFIG": config}}


def test_sends_from_threads_without_an_event_loop_reuse_one_redis_connection(fresh_layer):
    client = redis.Redis.from_url(settings.REDIS_URL)
    before = publishing_clients(client)
    seen: list[set[str]] = []

    # when two threads with no event loop (as a gunicorn worker's) publish ticks one after the
    # other, and Redis is asked after each send which connections published
    def feed(first_seq: int) -> None:
        for seq in range(first_seq, first_seq + 5):
            publish_market_prices([("AAPL", "187.2500", seq)])
            seen.append(publishing_clients(client) - before)

    for first_seq in (1, 6):
        thread = threading.Thread(target=feed, args=(first_seq,), daemon=True)
        thread.start()
        thread.join(10)

    # then the publishing connection is still open after each send, and it is the same one
    assert len(seen) == 10
    assert all(seen), seen
    assert len(set().union(*seen)) == 1, seen
