"""The live endpoint ``/ws/``: authentication, the subscribe protocol, permissions, errors."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
import weakref

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from tests.realtime.helpers import publish, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


async def _closed_with(communicator, code: int, timeout: float = 5) -> bool:
    message = await communicator.receive_output(timeout=timeout)
    return message == {"type": "websocket.close", "code": code}


async def test_token_authenticates_and_ping_answers_pong(ws, owner, token_for):
    # given
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    # when
    await communicator.send_json_to({"action": "ping"})
    # then
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}


async def test_pings_and_market_subscriptions_do_not_wait_for_the_database_thread(
    ws, owner, token_for
):
    # given an open socket, and the one thread where the endpoint's queries run kept busy (a
    # slow query of another connection)
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    busy = asyncio.ensure_future(database_sync_to_async(time.sleep)(2))
    await asyncio.sleep(0.1)
    # when the client pings and subscribes to the market meanwhile
    await communicator.send_json_to({"action": "ping"})
    pong = await communicator.receive_json_from(timeout=1)
    subscribed = await subscribe(communicator, channel="market")
    # then both are answered before that query is done
    assert pong == {"type": "pong"}
    assert subscribed["type"] == "subscribed"
    assert not busy.done()
    await busy


async def test_without_token_the_socket_is_closed_4401(ws):
    communicator = await ws()
    assert await _closed_with(communicator, 4401)


async def test_unknown_token_is_closed_4401(ws):
    communicator = await ws("not-a-token")
    assert await _closed_with(communicator, 4401)


async def test_session_cookie_authenticates(ws, owner):
    # given a browser session, as the dashboard has
    def login() -> str:
        client = Client()
        client.force_login(owner)
        return client.cookies["sessionid"].value

    session_key = await database_sync_to_async(login)()
    # when
    communicator = await ws(cookie=f"sessionid={session_key}")
    await communicator.send_json_to({"action": "ping"})
    # then
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}


async def test_session_of_a_changed_password_or_a_logout_is_closed_4401(ws, owner):
    # given two browser sessions of the owner
    def login() -> str:
        client = Client()
        client.force_login(owner)
        return client.cookies["sessionid"].value

    first, second = await database_sync_to_async(login)(), await database_sync_to_async(login)()

    # when the first session is gone (logged out, expired) and the owner changes the password
    # (which ends the second: its auth hash no longer matches)
    def logout_and_change_password() -> None:
        from django.contrib.sessions.models import Session

        Session.objects.filter(session_key=first).delete()
        owner.set_password("a-new-long-passphrase")
        owner.save()

    await database_sync_to_async(logout_and_change_password)()
    # then neither cookie opens a socket
    for session_key in (first, second, "not-a-session"):
        communicator = await ws(cookie=f"sessionid={session_key}")
        assert await _closed_with(communicator, 4401)


async def test_foreign_origin_is_refused(ws, owner, token_for, settings):
    # given the origin check of the real application, with a production-like ALLOWED_HOSTS
    settings.ALLOWED_HOSTS = ["testserver"]
    token = await database_sync_to_async(token_for)(owner)
    # then another site's page cannot open the socket, our own can
    await ws(token, origin="http://evil.example", expect_accept=False)
    await ws(token, origin="http://testserver", expect_accept=True)


async def test_connection_gauge_counts_open_sockets(ws, owner, token_for):
    token = await database_sync_to_async(token_for)(owner)
    before = REGISTRY.get_sample_value("trading_websocket_connections")
    communicator = await ws(token)
    await communicator.send_json_to({"action": "ping"})
    await communicator.receive_json_from(timeout=5)
    assert REGISTRY.get_sample_value("trading_websocket_connections") == before + 1
    await communicator.disconnect()
    assert REGISTRY.get_sample_value("trading_websocket_connections") == before


async def test_another_owners_agent_is_forbidden_and_sends_nothing(
    ws, owner, other_owner, token_for, make_agent
):
    # given the owner's agent and a socket of another owner
    agent = await database_sync_to_async(make_agent)(user=owner)
    communicator = await ws(await database_sync_to_async(token_for)(other_owner))
    # when the other owner subscribes to it, and to an agent that does not exist
    forbidden = await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    missing = await subscribe(communicator, channel="trades", agent_id=str(uuid.uuid4()))
    # then both answers are the same error, and the agent's events do not arrive
    assert forbidden["type"] == "error"
    assert forbidden["code"] == "forbidden"
    assert missing == forbidden
    await publish(agent.id)
    assert await communicator.receive_nothing(timeout=0.5)


async def test_owner_subscribes_to_own_agent(ws, owner, token_for, make_agent):
    agent = await database_sync_to_async(make_agent)()
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    answer = await subscribe(communicator, channel="portfolio", agent_id=str(agent.id))
    assert answer == {
        "type": "subscribed",
        "channel": "portfolio",
        "agent_id": str(agent.id),
        "symbol": None,
    }


class DatabaseThreadQueries:
    """The SQL statements run meanwhile in the thread of the consumers' queries
    (``database_sync_to_async`` runs them all in one thread), in ``statements``."""

    async def __aenter__(self) -> DatabaseThreadQueries:
        self.capture = CaptureQueriesContext(connection)
        await database_sync_to_async(self.capture.__enter__)()
        return self

    async def __aexit__(self, *exc_info) -> None:
        def finish() -> list[str]:
            self.capture.__exit__(None, None, None)
            return [query["sql"] for query in self.capture.captured_queries]

        self.statements = await database_sync_to_async(finish)()


async def test_a_connection_asks_the_database_once_per_agent_it_watches(
    ws, owner, operator, token_for, make_agent
):
    # given an owner's agent, watched on one channel by its owner and by an operator
    agent = await database_sync_to_async(make_agent)()
    for user in (owner, operator):
        communicator = await ws(await database_sync_to_async(token_for)(user))
        first = await subscribe(communicator, channel="portfolio", agent_id=str(agent.id))
        assert first["type"] == "subscribed"
        # when the same connection subscribes to the agent's other channels
        async with DatabaseThreadQueries() as queries:
            for channel in ("trades", "oversight"):
                answer = await subscribe(communicator, channel=channel, agent_id=str(agent.id))
                assert answer["type"] == "subscribed"
        # then they are granted without asking the database again
        assert queries.statements == []


async def test_operator_watches_any_agent_and_the_oversight_feed(
    ws, owner, operator, token_for, make_agent
):
    # given an owner's two agents and an operator
    agent = await database_sync_to_async(make_agent)()
    second = await database_sync_to_async(make_agent)(name="Second")
    communicator = await ws(await database_sync_to_async(token_for)(operator))
    # when the operator subscribes to one agent's trades and to the global oversight feed
    agent_answer = await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    feed_answer = await subscribe(communicator, channel="oversight")
    # then both are granted
    assert agent_answer["type"] == "subscribed"
    assert feed_answer == {
        "type": "subscribed",
        "channel": "oversight",
        "agent_id": None,
        "symbol": None,
    }
    # and approval requests of every agent arrive on the feed
    trade_seq = await publish(agent.id, event="trade.created", channel="trades")
    approval_seq = await publish(second.id, event="approval.requested", channel="oversight")
    first, then = await communicator.receive_json_from(5), await communicator.receive_json_from(5)
    assert (first["event"], first["agent_id"], first["seq"]) == (
        "trade.created",
        str(agent.id),
        trade_seq,
    )
    assert (then["event"], then["channel"], then["agent_id"], then["seq"]) == (
        "approval.requested",
        "oversight",
        str(second.id),
        approval_seq,
    )
    assert await communicator.receive_nothing(timeout=0.3)


async def test_owner_cannot_watch_the_global_oversight_feed(ws, owner, token_for):
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    answer = await subscribe(communicator, channel="oversight")
    assert (answer["type"], answer["code"]) == ("error", "forbidden")


async def test_staff_user_counts_as_operator(ws, user_factory, token_for):
    staff = await database_sync_to_async(user_factory)(username="staffer", staff=True)
    communicator = await ws(await database_sync_to_async(token_for)(staff))
    assert (await subscribe(communicator, channel="oversight"))["type"] == "subscribed"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"action": "dance"}', "unknown_action"),
        ('{"action": "subscribe", "channel": "weather"}', "unknown_channel"),
        ('{"action": "subscribe", "channel": "trades"}', "invalid_message"),
        ('{"action": "subscribe", "channel": "trades", "agent_id": "x"}', "invalid_message"),
        ('{"action": "subscribe", "channel": "market", "symbol": "NOPE"}', "unknown_symbol"),
        (json.dumps({"action": "ping", "pad": "x" * (64 * 1024)}), "frame_too_large"),
    ],
)
async def test_bad_messages_answer_an_error_and_keep_the_socket_open(
    ws, owner, token_for, frame, code
):
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    # when
    await communicator.send_to(text_data=frame)
    # then
    error = await communicator.receive_json_from(timeout=5)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["detail"]
    await communicator.send_json_to({"action": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}


async def test_binary_frame_answers_an_error(ws, owner, token_for):
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    await communicator.send_to(bytes_data=b'{"action": "ping"}')
    assert (await communicator.receive_json_from(timeout=5))["code"] == "invalid_message"


async def test_too_many_messages_per_second_are_refused_then_accepted_again(
    ws, owner, token_for, settings
):
    # given
    settings.WS_MAX_MESSAGES_PER_SECOND = 3
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    # when a burst of 6 pings arrives at once
    for _ in range(6):
        await communicator.send_json_to({"action": "ping"})
    # then 3 are answered, one error says why, the rest are dropped
    answers = [await communicator.receive_json_from(timeout=5) for _ in range(4)]
    assert answers[:3] == [{"type": "pong"}] * 3
    assert (answers[3]["type"], answers[3]["code"]) == ("error", "rate_limited")
    assert await communicator.receive_nothing(timeout=0.3)
    # and the next second the socket answers again
    await asyncio.sleep(1.0)
    await communicator.send_json_to({"action": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}


async def test_unsubscribe_stops_the_events(ws, owner, token_for, make_agent):
    agent = await database_sync_to_async(make_agent)()
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    # when
    await communicator.send_json_to(
        {"action": "unsubscribe", "channel": "trades", "agent_id": str(agent.id)}
    )
    # then
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "unsubscribed",
        "channel": "trades",
        "agent_id": str(agent.id),
        "symbol": None,
    }
    await publish(agent.id)
    assert await communicator.receive_nothing(timeout=0.5)


async def test_idle_socket_is_closed_4408_and_pings_keep_it_open(ws, owner, token_for, settings):
    # given a 1-second idle timeout
    settings.WS_IDLE_TIMEOUT_SECONDS = 1
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    # when the client pings for a while, the socket stays open
    for _ in range(3):
        await asyncio.sleep(0.5)
        await communicator.send_json_to({"action": "ping"})
        assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    # then, once it stops talking, the server closes it
    assert await _closed_with(communicator, 4408, timeout=3)


async def test_a_closed_connection_is_freed_without_waiting_for_the_garbage_collector(owner):
    # given: a connection of an authenticated user, served until the client disconnects
    from realtime.consumers import LiveConsumer

    messages: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    consumer = LiveConsumer({"type": "websocket", "path": "/ws/", "user": owner}, send)
    freed = weakref.ref(consumer)
    await messages.put({"type": "websocket.connect"})
    await messages.put({"type": "websocket.disconnect", "code": 1000})
    gc.collect()
    gc.disable()
    try:
        # when: it is served to its end, and the server lets go of it
        await consumer.serve(messages.get)
        for _ in range(3):
            await asyncio.sleep(0)  # the idle task finishes its cancellation
        del consumer

        # then: reference counting alone freed it (no cycle left for a full collection)
        assert sent[0] == {"type": "websocket.accept"}
        assert freed() is None
    finally:
        gc.enable()
