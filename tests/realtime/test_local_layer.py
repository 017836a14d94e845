"""The embedded default's channel layer: Channels' in-memory layer, swept at most once a second."""

from __future__ import annotations

import asyncio

import pytest

from realtime.layers import LocalChannelLayer


async def test_a_group_message_reaches_every_member_once():
    layer = LocalChannelLayer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("market", channel)

    await layer.group_send("market", {"type": "market.event", "seq": 1})

    for channel in channels:
        assert await asyncio.wait_for(layer.receive(channel), 1) == {
            "type": "market.event",
            "seq": 1,
        }
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channels[0]), 0.1)


async def test_messages_and_memberships_still_expire(monkeypatch):
    monkeypatch.setattr(LocalChannelLayer, "SWEEP_INTERVAL_SECONDS", 0.05)
    layer = LocalChannelLayer(expiry=0.1, group_expiry=1)
    waiting, member = await layer.new_channel(), await layer.new_channel()
    await layer.send(waiting, {"type": "stale"})
    await layer.group_add("market", member)

    # after the expiry, the next sweep drops the unread message
    await asyncio.sleep(0.2)
    await layer.send(member, {"type": "fresh"})  # any layer call may sweep
    assert await asyncio.wait_for(layer.receive(member), 1) == {"type": "fresh"}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(waiting), 0.2)

    # and after the group expiry, the membership is gone (Channels compares whole seconds)
    await asyncio.sleep(2.1)
    await layer.group_send("market", {"type": "late"})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(member), 0.2)
