"""Live events: sent after commit, ordered by ``seq``, resumable, and market ticks."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import close_old_connections, transaction
from django.utils import timezone

from realtime.models import AgentEventBatch
from realtime.services import (
    agent_events,
    event_buffer_prune,
    publish_agent_event,
    publish_market_prices,
)
from tests.helpers import buffered_events
from tests.realtime.helpers import publish, publish_sync, receive_events, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def owner_socket(ws, owner, token_for, make_agent):
    """The owner's agent and a socket of the owner."""
    agent = await database_sync_to_async(make_agent)()
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    return agent, communicator


async def test_event_arrives_only_after_commit(owner_socket):
    # given a subscriber and a transaction that publishes, then waits
    agent, communicator = owner_socket
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    published, commit = threading.Event(), threading.Event()

    def business_transaction():
        try:
            with transaction.atomic():
                publish_agent_event(
                    agent_id=agent.id, event="trade.created", channel="trades", data={"id": 1}
                )
                published.set()
                commit.wait(5)
        finally:
            close_old_connections()

    worker = asyncio.get_running_loop().run_in_executor(None, business_transaction)
    assert await asyncio.to_thread(published.wait, 5)
    # then nothing is sent while the transaction is open
    assert await communicator.receive_nothing(timeout=0.3)
    # and the event arrives once it commits
    commit.set()
    await worker
    event = await communicator.receive_json_from(timeout=5)
    assert (event["type"], event["event"], event["data"]) == ("event", "trade.created", {"id": 1})


async def test_rolled_back_transaction_sends_and_keeps_nothing(owner_socket):
    agent, communicator = owner_socket
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    # when
    await publish(agent.id, rollback=True)
    # then
    assert await communicator.receive_nothing(timeout=0.5)
    assert await database_sync_to_async(AgentEventBatch.objects.count)() == 0
    # and the next committed event takes seq 1: the rolled-back one used no number
    assert await publish(agent.id) == 1
    assert (await communicator.receive_json_from(timeout=5))["seq"] == 1


async def test_event_frame_and_seq_shared_by_the_agents_channels(owner_socket):
    # given a subscriber of the agent's trades and portfolio
    agent, communicator = owner_socket
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    await subscribe(communicator, channel="portfolio", agent_id=str(agent.id))
    # when events go to both channels
    await publish(agent.id, event="trade.created", channel="trades", data={"id": "t1"})
    await publish(agent.id, event="trade.filled", channel="trades", data={"id": "t1"})
    await publish(agent.id, event="portfolio.update", channel="portfolio", data={"cash": "1.50"})
    # then they arrive in order, with one increasing seq
    events = await receive_events(communicator, 3)
    assert [(e["event"], e["channel"], e["seq"]) for e in events] == [
        ("trade.created", "trades", 1),
        ("trade.filled", "trades", 2),
        ("portfolio.update", "portfolio", 3),
    ]
    last = events[-1]
    assert set(last) == {"type", "event", "channel", "agent_id", "data", "timestamp", "seq"}
    assert last["agent_id"] == str(agent.id)
    assert last["data"] == {"cash": "1.50"}
    assert last["timestamp"].endswith("Z")


async def test_resubscribing_with_since_seq_replays_exactly_the_missed_events(
    ws, owner, token_for, make_agent
):
    # given a client that saw seq 1 and disconnected
    agent = await database_sync_to_async(make_agent)()
    token = await database_sync_to_async(token_for)(owner)
    first = await ws(token)
    await subscribe(first, channel="trades", agent_id=str(agent.id))
    await publish(agent.id, data={"n": 0})
    seen = (await first.receive_json_from(timeout=5))["seq"]
    await first.disconnect()
    # when 5 trade events (and a portfolio one it does not watch) happen meanwhile
    for n in range(1, 6):
        await publish(agent.id, data={"n": n})
        if n == 3:
            await publish(agent.id, event="portfolio.update", channel="portfolio")
    # and it resubscribes with since_seq
    second = await ws(token)
    answer = await subscribe(second, channel="trades", agent_id=str(agent.id), since_seq=seen)
    # then it receives exactly those 5, in order
    assert answer["type"] == "subscribed"
    replayed = await receive_events(second, 5)
    assert [e["data"]["n"] for e in replayed] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in replayed] == [2, 3, 4, 6, 7]
    assert all(e["event"] == "trade.created" for e in replayed)
    assert await second.receive_nothing(timeout=0.3)
    # then live ones
    await publish(agent.id, data={"n": 6})
    live = await second.receive_json_from(timeout=5)
    assert (live["data"]["n"], live["seq"]) == (6, 8)
    assert await second.receive_nothing(timeout=0.3)


# PostgreSQL: the in-memory SQLite test database locks tables, no reads while a write is open
@pytest.mark.postgres
async def test_resume_while_events_are_published_has_no_gap_or_duplicate(owner_socket):
    # given a writer publishing 40 events, one transaction each
    agent, communicator = owner_socket
    total = 40
    started = threading.Event()

    def writer():
        try:
            for n in range(total):
                publish_sync(agent.id, data={"n": n})
                if n == 5:
                    started.set()
        finally:
            close_old_connections()

    worker = asyncio.get_running_loop().run_in_executor(None, writer)
    assert await asyncio.to_thread(started.wait, 10)
    # when the client subscribes from the start while it runs
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=0)
    await worker
    # then it sees every seq exactly once, in order
    events = await receive_events(communicator, total)
    assert [e["seq"] for e in events] == list(range(1, total + 1))
    assert await communicator.receive_nothing(timeout=0.3)


async def test_gap_when_the_missed_events_were_pruned(owner_socket, settings):
    # given a buffer of 3 events per agent and 10 published
    settings.WS_EVENT_BUFFER_SIZE = 3
    agent, communicator = owner_socket
    for n in range(10):
        await publish(agent.id, data={"n": n})
    kept = await database_sync_to_async(lambda: [event.seq for event in buffered_events(agent)])()
    assert kept == [8, 9, 10]
    # when a client resumes from seq 2
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=2)
    # then it is told that events are missing, and which seq is the oldest kept
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "gap",
        "channel": "trades",
        "agent_id": str(agent.id),
        "since_seq": 2,
        "oldest_seq": 8,
    }
    # and live events follow
    await publish(agent.id, data={"n": 10})
    assert (await communicator.receive_json_from(timeout=5))["seq"] == 11


async def test_resume_from_just_before_the_oldest_kept_event_is_no_gap(owner_socket, settings):
    settings.WS_EVENT_BUFFER_SIZE = 3
    agent, communicator = owner_socket
    for n in range(10):
        await publish(agent.id, data={"n": n})
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=7)
    assert [e["seq"] for e in await receive_events(communicator, 3)] == [8, 9, 10]


async def test_gap_when_since_seq_is_beyond_anything_sent(owner_socket):
    # given an agent whose last event has seq 3
    agent, communicator = owner_socket
    for n in range(3):
        await publish(agent.id, data={"n": n})

    # when a client resumes from seq 50, which the server never sent
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=50)

    # then it is told to resync, not left waiting in silence
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "gap",
        "channel": "trades",
        "agent_id": str(agent.id),
        "since_seq": 50,
        "latest_seq": 3,
    }
    # and live events follow
    await publish(agent.id, data={"n": 3})
    assert (await communicator.receive_json_from(timeout=5))["seq"] == 4


async def test_resume_from_the_latest_seq_is_no_gap(owner_socket):
    agent, communicator = owner_socket
    for n in range(3):
        await publish(agent.id, data={"n": n})
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=3)
    assert await communicator.receive_nothing(timeout=0.3)


async def test_events_older_than_a_day_are_pruned(owner_socket):
    # given two events, the first from yesterday
    agent, communicator = owner_socket
    await publish(agent.id)
    await publish(agent.id)

    def age_first_event():
        AgentEventBatch.objects.filter(agent=agent, first_seq__lte=1, last_seq__gte=1).update(
            created_at=timezone.now() - timedelta(hours=25)
        )
        return event_buffer_prune()

    # when the buffer is pruned
    assert await database_sync_to_async(age_first_event)() == 1
    # then resuming from 0 reports the gap
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=0)
    gap = await communicator.receive_json_from(timeout=5)
    assert (gap["type"], gap["oldest_seq"]) == ("gap", 2)


async def test_agent_terminated_reaches_every_subscriber_of_the_agent_once(
    ws, owner, token_for, make_agent
):
    # given one client watching the agent's trades, another its trades and portfolio
    agent = await database_sync_to_async(make_agent)()
    token = await database_sync_to_async(token_for)(owner)
    trades_only = await ws(token)
    await subscribe(trades_only, channel="trades", agent_id=str(agent.id))
    both = await ws(token)
    await subscribe(both, channel="trades", agent_id=str(agent.id))
    await subscribe(both, channel="portfolio", agent_id=str(agent.id))
    # when the agent is terminated
    seq = await publish(agent.id, event="agent.terminated", channel="portfolio")
    # then each client receives it exactly once
    for communicator in (trades_only, both):
        event = await communicator.receive_json_from(timeout=5)
        assert (event["event"], event["channel"], event["seq"]) == (
            "agent.terminated",
            "portfolio",
            seq,
        )
        assert await communicator.receive_nothing(timeout=0.3)


async def test_replay_of_trades_includes_agent_terminated(owner_socket):
    agent, communicator = owner_socket
    await publish(agent.id, event="trade.cancelled")
    await publish(agent.id, event="agent.terminated", channel="portfolio")
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=0)
    events = await receive_events(communicator, 2)
    assert [e["event"] for e in events] == ["trade.cancelled", "agent.terminated"]


async def test_market_ticks_from_a_thread_without_event_loop(ws, owner, token_for):
    # given one client watching every symbol and one watching AAPL only
    token = await database_sync_to_async(token_for)(owner)
    every = await ws(token)
    assert (await subscribe(every, channel="market"))["symbol"] is None
    apple = await ws(token)
    assert (await subscribe(apple, channel="market", symbol="aapl"))["symbol"] == "AAPL"

    # when the market feed, a background thread with no event loop, ticks two symbols
    # while nothing else wakes this event loop up (a send that is not thread-safe would sit
    # unnoticed in the loop's queue until the receive times out)
    def feed():
        publish_market_prices([("AAPL", "187.2500", 7)])
        publish_market_prices([("MSFT", "402.1000", 3)])

    thread = threading.Thread(target=feed, daemon=True)
    started = time.monotonic()
    thread.start()
    first = await every.receive_json_from(timeout=5)
    assert time.monotonic() - started < 1.0
    # then
    ticks = [first, await every.receive_json_from(timeout=5)]
    await asyncio.to_thread(thread.join, 5)
    assert [(t["event"], t["channel"], t["data"], t["seq"]) for t in ticks] == [
        ("market.price", "market", {"symbol": "AAPL", "price": "187.2500"}, 7),
        ("market.price", "market", {"symbol": "MSFT", "price": "402.1000"}, 3),
    ]
    assert ticks[0]["agent_id"] is None
    assert (await apple.receive_json_from(timeout=5))["data"]["symbol"] == "AAPL"
    assert await apple.receive_nothing(timeout=0.3)


async def test_a_tick_reaches_a_client_watching_all_and_one_symbol_once(ws, owner, token_for):
    communicator = await ws(await database_sync_to_async(token_for)(owner))
    await subscribe(communicator, channel="market")
    await subscribe(communicator, channel="market", symbol="TSLA")
    # when published from code running on the event loop itself
    publish_market_prices([("TSLA", "250", 1)])
    # then
    tick = await communicator.receive_json_from(timeout=5)
    assert tick["data"] == {"symbol": "TSLA", "price": "250"}
    assert await communicator.receive_nothing(timeout=0.3)


async def test_a_market_step_reaches_each_watcher_once_per_symbol_in_order(ws, owner, token_for):
    # given a client watching every symbol, one watching MSFT, and one watching both ways
    token = await database_sync_to_async(token_for)(owner)
    every, msft, both = await ws(token), await ws(token), await ws(token)
    await subscribe(every, channel="market")
    await subscribe(msft, channel="market", symbol="MSFT")
    await subscribe(both, channel="market")
    await subscribe(both, channel="market", symbol="MSFT")
    # when one step of the market moves three symbols
    publish_market_prices(
        [("AAPL", "187.25", 8), ("MSFT", "402.10", 4), ("TSLA", "250.00", 2)],
        timestamp="2026-11-26T10:00:00Z",
    )
    # then the watchers of every symbol get the three ticks, one frame each, in order
    for communicator in (every, both):
        ticks = [await communicator.receive_json_from(timeout=5) for _ in range(3)]
        assert [(t["data"]["symbol"], t["data"]["price"], t["seq"]) for t in ticks] == [
            ("AAPL", "187.25", 8),
            ("MSFT", "402.10", 4),
            ("TSLA", "250.00", 2),
        ]
        assert {t["timestamp"] for t in ticks} == {"2026-11-26T10:00:00Z"}
        assert await communicator.receive_nothing(timeout=0.3)
    # and the watcher of MSFT only its tick
    tick = await msft.receive_json_from(timeout=5)
    assert (tick["event"], tick["data"], tick["seq"]) == (
        "market.price",
        {"symbol": "MSFT", "price": "402.10"},
        4,
    )
    assert await msft.receive_nothing(timeout=0.3)


async def test_a_transactions_events_on_several_channels_arrive_in_seq_order(owner_socket):
    # given a client watching the agent's trades and portfolio
    agent, communicator = owner_socket
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    await subscribe(communicator, channel="portfolio", agent_id=str(agent.id))

    # when one transaction publishes on both channels, in turns, as an order does
    def business_transaction():
        with transaction.atomic():
            locked = type(agent).objects.select_for_update().get(pk=agent.pk)
            with agent_events(locked) as events:
                for event, channel in [
                    ("trade.created", "trades"),
                    ("trade.filled", "trades"),
                    ("portfolio.update", "portfolio"),
                    ("trade.created", "trades"),
                ]:
                    events.publish(event=event, channel=channel, data={"k": event})

    await database_sync_to_async(business_transaction)()
    # then they arrive once each, in seq order, with one commit timestamp
    events = await receive_events(communicator, 4)
    assert [(e["seq"], e["event"], e["channel"]) for e in events] == [
        (1, "trade.created", "trades"),
        (2, "trade.filled", "trades"),
        (3, "portfolio.update", "portfolio"),
        (4, "trade.created", "trades"),
    ]
    assert len({e["timestamp"] for e in events}) == 1
    assert await communicator.receive_nothing(timeout=0.3)


def _publish_in_one_transaction(agent, published: list[tuple[str, str]]) -> None:
    with transaction.atomic():
        locked = type(agent).objects.select_for_update().get(pk=agent.pk)
        with agent_events(locked) as events:
            for event, channel in published:
                events.publish(event=event, channel=channel, data={"k": event})


async def test_a_transactions_events_are_buffered_together_and_replayed_one_by_one(owner_socket):
    # given an order's three events published in one transaction, then one more
    agent, communicator = owner_socket
    order = [
        ("trade.created", "trades"),
        ("trade.filled", "trades"),
        ("portfolio.update", "portfolio"),
    ]
    await database_sync_to_async(_publish_in_one_transaction)(agent, order)
    await publish(agent.id)
    # then the buffer keeps a row per transaction
    rows = await database_sync_to_async(
        lambda: list(
            AgentEventBatch.objects.filter(agent=agent).values_list("first_seq", "last_seq")
        )
    )()
    assert rows == [(1, 3), (4, 4)]
    # when a client resumes the trades channel from inside the first transaction's events
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=1)
    # then it gets the trades events after that seq, and not the portfolio's
    events = await receive_events(communicator, 2)
    assert [(e["seq"], e["event"]) for e in events] == [(2, "trade.filled"), (4, "trade.created")]
    assert await communicator.receive_nothing(timeout=0.3)


async def test_pruning_keeps_a_transactions_events_together_and_at_least_the_buffer_size(
    owner_socket, settings
):
    # given a buffer of 3 events per agent and transactions of 2 events each
    settings.WS_EVENT_BUFFER_SIZE = 3
    agent, communicator = owner_socket
    pair = [("trade.created", "trades"), ("trade.filled", "trades")]
    for _ in range(5):
        await database_sync_to_async(_publish_in_one_transaction)(agent, pair)
    # then the last 3 events are kept with the rest of their transaction: seqs 7 to 10
    kept = await database_sync_to_async(lambda: [e.seq for e in buffered_events(agent)])()
    assert kept == [7, 8, 9, 10]
    # and a client resuming from seq 6 replays them without a gap
    await subscribe(communicator, channel="trades", agent_id=str(agent.id), since_seq=6)
    assert [e["seq"] for e in await receive_events(communicator, 4)] == [7, 8, 9, 10]
