"""One subscriber per serving process: each group message is received once and handed to every
local connection that watches the group.

Channels delivers a group message to each member channel separately: every connection's
consumer receives its own copy, decodes it and dispatches it, and ``AsyncConsumer.dispatch``
first closes stale database connections in the one worker thread that ``sync_to_async`` keeps
for thread-sensitive work. A tick watched by a thousand clients of one process is then a
thousand decodes and a thousand hops through that thread, and the deliveries queue behind each
other. Instead the process joins each group once, with one channel of its own, through the
channel layer's documented API (``new_channel``, ``group_add``, ``group_discard``,
``receive``), receives each message once, and calls the watching consumers' ``deliver`` on the
event loop that serves them. Delivering touches no database.

Group messages name the group they were sent to (``group``, set by ``realtime.services``): that
names the members. Memberships belong to an event loop: a serving process has one loop, a test
has one per test.

Order and fairness: messages are handed out per stream, in the order received: one stream per
agent (all its groups, so its events keep their ``seq`` order across channels) and one for the
market. Streams are handed out side by side, and a message for many connections yields the
event loop every ``YIELD_EVERY`` of them, so an agent's fill does not wait until a market tick
has reached every watcher of the process, and the server keeps accepting connections meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from typing import Protocol

logger = logging.getLogger("trading_demo.realtime")

# Layers with a group expiry (the in-memory layer and channels-redis' core layer, a day by
# default) forget a membership that is not added again: every group is renewed this often.
RENEW_SECONDS = 3600.0
# After the layer fails to answer a receive (Redis restarting), wait this long before the next.
RETRY_SECONDS = 1.0
# How many connections a message is handed to before other work gets the event loop.
YIELD_EVERY = 25


class Member(Protocol):
    async def deliver(self, message: dict) -> None: ...


class Fanout:
    """The groups one event loop's connections watch, joined once each, and their members."""

    def __init__(self, layer):
        self.layer = layer
        self.channel: str | None = None
        self.members: dict[str, set[Member]] = {}
        # group → its group_add in flight: later joiners wait for the same one.
        self.joining: dict[str, asyncio.Future] = {}
        # group → its group_discard in flight: a new join of the group waits for it, so the
        # layer never sees the discard after the add.
        self.leaving: dict[str, asyncio.Future] = {}
        self.channel_lock = asyncio.Lock()
        self.tasks: list[asyncio.Task] = []
        # Messages received and not yet handed out, per stream (``stream_of``).
        self.streams: dict[str, deque[dict]] = {}
        self.draining: set[asyncio.Task] = set()

    async def join(self, group: str, member: Member) -> None:
        """Add ``member`` to ``group``; on return the layer delivers the group's messages here."""
        members = self.members.get(group)
        if members is None:
            members = self.members[group] = set()
            self.joining[group] = asyncio.ensure_future(self._add(group))
        members.add(member)
        pending = self.joining.get(group)
        if pending is not None:
            try:
                await asyncio.shield(pending)
            except BaseException:
                members.discard(member)
                raise

    async def leave(self, group: str, member: Member) -> None:
        members = self.members.get(group)
        if members is None:
            return
        members.discard(member)
        if not members and group not in self.joining:
            del self.members[group]
            await self._discard(group)

    async def _add(self, group: str) -> None:
        try:
            leaving = self.leaving.get(group)
            if leaving is not None:
                # Whether or not the layer took the previous discard, the add comes after it.
                with contextlib.suppress(Exception):
                    await asyncio.shield(leaving)
            await self.layer.group_add(group, await self._channel())
        except BaseException:
            # Nobody is subscribed: the next join tries again.
            self.members.pop(group, None)
            raise
        finally:
            self.joining.pop(group, None)
        if not self.members.get(group):
            # Every member left while the join was in flight: nobody watches the group now.
            self.members.pop(group, None)
            await self._discard(group)

    async def _discard(self, group: str) -> None:
        task = self.leaving[group] = asyncio.ensure_future(
            self.layer.group_discard(group, self.channel)
        )
        try:
            await asyncio.shield(task)
        finally:
            if self.leaving.get(group) is task:
                del self.leaving[group]

    async def _channel(self) -> str:
        async with self.channel_lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
                self.tasks = [
                    asyncio.create_task(self._receive()),
                    asyncio.create_task(self._renew()),
                ]
        return self.channel

    async def _receive(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except Exception:
                logger.warning("could not read the channel layer; retrying", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.enqueue(message)

    def enqueue(self, message: dict) -> None:
        """Queue ``message`` on its stream; a stream with no task handing it out gets one."""
        key = stream_of(message)
        pending = self.streams.get(key)
        if pending is not None:
            pending.append(message)
            return
        self.streams[key] = deque([message])
        task = asyncio.create_task(self._drain(key))
        self.draining.add(task)
        task.add_done_callback(self.draining.discard)

    async def _drain(self, key: str) -> None:
        pending = self.streams[key]
        try:
            while pending:
                await self.dispatch(pending.popleft())
        finally:
            del self.streams[key]

    async def dispatch(self, message: dict) -> None:
        """Hand ``message`` to each member of its group, in turn; one failing member does not
        keep it from the others."""
        for count, member in enumerate(tuple(self.members.get(message.get("group"), ()))):
            if count and count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            try:
                await member.deliver(message)
            except Exception:
                logger.exception("could not deliver a live event to a connection")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            for group in tuple(self.members):
                with contextlib.suppress(Exception):
                    await self.layer.group_add(group, self.channel)


def stream_of(message: dict) -> str:
    """The stream of a group message: its agent's (agent events), or the market's."""
    events = message.get("events") or ()
    agent_id = events[0].get("agent_id") if events else None
    return f"agent:{agent_id}" if agent_id else "market"


_fanouts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Fanout] = weakref.WeakKeyDictionary()


def fanout(layer) -> Fanout:
    """The running event loop's ``Fanout`` on ``layer``."""
    loop = asyncio.get_running_loop()
    current = _fanouts.get(loop)
    if current is None or current.layer is not layer:
        current = _fanouts[loop] = Fanout(layer)
    return current
