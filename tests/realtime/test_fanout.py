"""One process, many watchers: each group message reaches every connection that joined it."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer

import realtime.fanout
from tests.realtime.helpers import publish, receive_events, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


async def test_every_watcher_of_an_agent_receives_each_event_once_in_order(
    ws, owner, token_for, make_agent
):
    # given twenty connections of one process on the same agent's trades
    agent = await database_sync_to_async(make_agent)()
    token = await database_sync_to_async(token_for)(owner)
    watchers = [await ws(token) for _ in range(20)]
    for communicator in watchers:
        await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    # when three events are published
    seqs = [await publish(agent.id, data={"n": n}) for n in range(3)]
    # then each connection receives the three, in seq order, and nothing else
    for communicator in watchers:
        events = await receive_events(communicator, 3)
        assert [e["seq"] for e in events] == seqs
        assert [e["data"]["n"] for e in events] == [0, 1, 2]
        assert await communicator.receive_nothing(timeout=0.05)


async def test_a_watcher_connected_longer_than_the_layers_group_expiry_still_receives_events(
    ws, owner, token_for, make_agent, settings, monkeypatch
):
    # given a channel layer that forgets group memberships after a second (the in-memory
    # layer's and the core Redis layer's default is a day), and the process renewing its own
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"group_expiry": 1},
        }
    }
    monkeypatch.setattr(realtime.fanout, "RENEW_SECONDS", 0.2)
    agent = await database_sync_to_async(make_agent)()
    token = await database_sync_to_async(token_for)(owner)
    communicator = await ws(token)
    await subscribe(communicator, channel="trades", agent_id=str(agent.id))
    # when an event is published after the expiry has passed
    await asyncio.sleep(1.5)
    seq = await publish(agent.id)
    # then the watcher still receives it
    (event,) = await receive_events(communicator, 1)
    assert event["seq"] == seq


class CountingLayer(InMemoryChannelLayer):
    """The in-memory layer, counting the channels it hands out."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.channels_made = 0

    async def new_channel(self, prefix="specific."):
        self.channels_made += 1
        return await super().new_channel(prefix)


async def test_connections_take_no_channel_of_their_own_on_the_layer(
    ws, owner, token_for, make_agent, settings
):
    # given the process's channel layer, counting the channels it hands out (with Redis, each
    # one a subscription and a task waiting on it for as long as the socket is open)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.CountingLayer"}}
    agent = await database_sync_to_async(make_agent)()
    token = await database_sync_to_async(token_for)(owner)
    # when twenty connections open and watch an agent's trades and the market
    watchers = [await ws(token) for _ in range(20)]
    for communicator in watchers:
        await subscribe(communicator, channel="trades", agent_id=str(agent.id))
        await subscribe(communicator, channel="market")
    # then the layer made one channel, the process's, and each connection receives the events
    assert get_channel_layer().channels_made == 1
    seq = await publish(agent.id)
    for communicator in watchers:
        (event,) = await receive_events(communicator, 1)
        assert event["seq"] == seq


class SlowLayer(InMemoryChannelLayer):
    """The in-memory layer, with adds and discards that take a while (a layer over a network),
    a discard longer than an add."""

    async def group_add(self, group, channel):
        await asyncio.sleep(0.05)
        await super().group_add(group, channel)

    async def group_discard(self, group, channel):
        await asyncio.sleep(0.1)
        await super().group_discard(group, channel)


class Watcher:
    def __init__(self):
        self.received = []

    async def deliver(self, message):
        self.received.append(message)


def members_of(layer, group):
    return set(layer.groups.get(group, ()))


async def test_a_group_left_while_its_join_is_in_flight_is_not_kept_subscribed():
    # given a process joining a group for a watcher that disconnects before the join completes
    layer = SlowLayer()
    fanout = realtime.fanout.Fanout(layer)
    watcher = Watcher()
    join = asyncio.ensure_future(fanout.join("agent.x", watcher))
    await asyncio.sleep(0.01)
    await fanout.leave("agent.x", watcher)
    # when the join has completed
    await join
    # then the process no longer receives the group's messages
    assert "agent.x" not in fanout.members
    assert members_of(layer, "agent.x") == set()


async def test_a_join_right_after_the_last_leave_stays_subscribed():
    # given a group whose last watcher leaves (its discard takes a while)
    layer = SlowLayer()
    fanout = realtime.fanout.Fanout(layer)
    first, second = Watcher(), Watcher()
    await fanout.join("agent.y", first)
    leave = asyncio.ensure_future(fanout.leave("agent.y", first))
    await asyncio.sleep(0.01)
    # when another watcher joins while that discard is still in flight
    await fanout.join("agent.y", second)
    await leave
    # then the layer still delivers the group to the process, and so to the new watcher
    assert members_of(layer, "agent.y") == {fanout.channel}
    await layer.group_send("agent.y", {"type": "live.events", "group": "agent.y", "events": []})
    await asyncio.sleep(0.1)
    assert len(second.received) == 1 and first.received == []
