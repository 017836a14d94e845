"""Publishing live events: persisted with the change that causes them, sent after commit.

A business transaction publishes through one ``AgentEvents`` per agent (``agent_events``),
opened on the agent row it locked: each event takes the agent's next ``seq`` from that row,
the events are stored together as one row of the agent's bounded buffer
(``AgentEventBatch``), and one ``transaction.on_commit`` callback sends them to the channel
layer. A rolled-back transaction therefore neither sends nor keeps anything, and a client
that missed events can replay them from the buffer by ``seq``. This module imports no domain
app: the domain calls into it.

Sending works from any thread. The in-memory layer's queues belong to the event loop that
serves this process's WebSockets, so a send from another thread (a sync view, a background
job, a gRPC worker) is scheduled onto that loop; the loop is recorded when a consumer connects
(``bind_event_loop``). A process that serves no WebSockets (gunicorn's workers, ``run_jobs``,
``run_market``) sends on one publishing loop of its own instead, a daemon thread started on the
first send: the Redis layers keep their connections per event loop, so every send of the
process reuses the same connections rather than opening and closing a pool per send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from api.representation import utc_text
from observability.metrics import CHANNEL_LAYER_DROPPED
from realtime.groups import agent_control_group, agent_group, market_group, oversight_feed_group

logger = logging.getLogger("trading_demo.realtime")

# Events that operators watching the global `oversight` feed also receive.
OVERSIGHT_FEED_EVENTS = {"approval.requested", "approval.completed"}
# Events every subscriber of the agent receives, whatever channel it watches.
CONTROL_EVENTS = {"agent.terminated"}
# The model whose rows own the agents' event counters (``event_seq``), named by label as the
# buffer's foreign key names it: the domain calls into this module, never the reverse.
AGENT_MODEL = "agents.Agent"
# Events older than this are dropped from the buffer even if there are fewer than the maximum.
EVENT_BUFFER_MAX_AGE = timedelta(hours=24)
# How long a publishing thread waits for the loop that sends to hand its messages over.
SEND_TIMEOUT_SECONDS = 5.0

_serving_loop: asyncio.AbstractEventLoop | None = None
_pending_sends: set[asyncio.Task] = set()
# This process's publishing loop, ``(pid, loop)``; see ``_publishing_loop``.
_publisher: tuple[int, asyncio.AbstractEventLoop] | None = None
_publisher_lock = threading.Lock()


def _forget_publishing_loop() -> None:
    """In a forked child: the parent's publishing thread does not exist here, and its loop's
    connections are the parent's sockets, so the child starts its own on its first send (and
    its lock fresh, in case another thread of the parent held it at the fork)."""
    global _publisher, _publisher_lock
    _publisher = None
    _publisher_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_publishing_loop)


def _plain(data: Any) -> Any:
    """Serialize now (before commit) to plain JSON types: Decimal → str, UUID → str, …"""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _prune_interval(buffer_size: int) -> int:
    """Prune every Nth seq, so the buffer holds between ``size`` and ``size + N`` events."""
    return max(1, min(100, buffer_size // 10))


class AgentEvents:
    """The live events one transaction publishes for one agent: numbered, stored and sent by
    this one publisher.

    ``agent`` is the agent's row as the transaction locked it (``SELECT … FOR UPDATE``), so
    its ``event_seq`` is current and no other transaction can number an event of the agent
    until this one ends: each ``seq`` is one more than the previous, with no gap and no
    repeat. Events are numbered in memory; ``write`` (called by ``agent_events`` at the end
    of the block, still inside the transaction) stores them as one buffer row, writes the
    counter unless the caller saved it with its own change of the row (``counter_fields``),
    and registers one on-commit send of them all, in seq order.
    """

    def __init__(self, agent):
        self.agent = agent
        self.first_seq = agent.event_seq
        self.saved_seq = agent.event_seq
        # The events as the buffer keeps them (``AgentEventBatch.events``).
        self.rows: list[dict] = []
        # (groups, event) of each event, sent together once the transaction commits.
        self.sends: list[tuple[list[str], dict]] = []

    def publish(self, *, event: str, channel: str, data: dict) -> int:
        """Number ``event`` and keep it, to be stored at the end of the block and sent once the
        transaction commits. Returns its ``seq``."""
        payload = _plain(data)
        agent_id = self.agent.pk
        self.agent.event_seq += 1
        seq = self.agent.event_seq
        self.rows.append({"seq": seq, "event": event, "channel": channel, "data": payload})
        message = {  # the event as sent; _send_agent_events stamps it and wraps it for the layer
            "event": event,
            "channel": channel,
            "agent_id": str(agent_id),
            "data": payload,
            "seq": seq,
        }
        groups = [agent_group(agent_id, channel)]
        if event in OVERSIGHT_FEED_EVENTS:
            groups.append(oversight_feed_group())
        if event in CONTROL_EVENTS:
            groups.append(agent_control_group(agent_id))
        self.sends.append((groups, message))
        return seq

    def counter_fields(self, agent) -> list[str]:
        """``["event_seq"]`` when ``agent`` is this publisher's row, for the caller's ``save``
        of the row to write the counter too (saving a statement); ``[]`` otherwise."""
        if agent is not self.agent:
            return []
        self.saved_seq = agent.event_seq
        return ["event_seq"]

    def write(self) -> None:
        from realtime.models import AgentEventBatch

        if not self.rows:
            return
        sends = self.sends
        transaction.on_commit(lambda: _send_agent_events(sends))
        last = self.agent.event_seq
        AgentEventBatch.objects.create(
            agent_id=self.agent.pk, first_seq=self.rows[0]["seq"], last_seq=last, events=self.rows
        )
        if last != self.saved_seq:
            type(self.agent).objects.filter(pk=self.agent.pk).update(event_seq=last)
            self.saved_seq = last
        interval = _prune_interval(settings.WS_EVENT_BUFFER_SIZE)
        if last // interval != self.first_seq // interval:
            _prune(self.agent.pk, last)
        self.first_seq = last
        self.rows, self.sends = [], []


@contextmanager
def agent_events(agent):
    """Publish ``agent``'s live events of this block (``AgentEvents``); they are stored at the
    end of the block and sent once the transaction commits.

    Must run inside the business transaction, with ``agent`` the row it locked. An exception
    leaves nothing stored or sent, and the row's counter as it was, so a savepoint rolled
    back around the block takes its events with it.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("live events are published inside the business transaction")
    first_seq = agent.event_seq
    events = AgentEvents(agent)
    try:
        yield events
        events.write()
    except BaseException:
        agent.event_seq = first_seq
        raise


def publish_agent_event(*, agent_id: UUID | str, event: str, channel: str, data: dict) -> int:
    """Publish one event of the agent in the caller's transaction, for code that does not hold
    the agent's row (a test, a background job): the row that keeps the agent's counter is
    locked here, then the event is published as ``agent_events`` does. Returns its ``seq``."""
    agents = apps.get_model(AGENT_MODEL)
    agent = agents.objects.select_for_update().only("pk", "event_seq").get(pk=agent_id)
    with agent_events(agent) as events:
        return events.publish(event=event, channel=channel, data=data)


def _prune(agent_id, seq: int) -> None:
    """Drop the agent's batches whose every event is older than the last
    ``WS_EVENT_BUFFER_SIZE`` (a batch goes whole, so at least that many stay), or than
    ``EVENT_BUFFER_MAX_AGE``."""
    from realtime.models import AgentEventBatch

    AgentEventBatch.objects.filter(agent_id=agent_id).filter(
        Q(last_seq__lte=seq - settings.WS_EVENT_BUFFER_SIZE)
        | Q(created_at__lt=timezone.now() - EVENT_BUFFER_MAX_AGE)
    ).delete()


def publish_market_prices(
    ticks: list[tuple[str, Any, int]], *, timestamp: str | None = None
) -> None:
    """Send the ``market.price`` ticks of one market step, ``(symbol, price, seq)`` each, to
    subscribers of all symbols and of each symbol.

    The step travels as one channel-layer message per group: a connection watching every
    symbol is woken once per step, not once per symbol, and its frames go out in one write.
    Ticks are not buffered: a client that missed some reads the current prices over REST.
    """
    timestamp = timestamp or utc_text()
    events = [
        {
            "event": "market.price",
            "channel": "market",
            "agent_id": None,
            "data": {"symbol": symbol.upper(), "price": str(price)},
            "timestamp": timestamp,
            "seq": seq,
        }
        for symbol, price, seq in ticks
    ]
    sends = [([market_group()], {"type": "market.prices", "events": events})]
    sends += [
        ([market_group(symbol)], {"type": "market.prices", "events": [event]})
        for (symbol, _, _), event in zip(ticks, events, strict=True)
    ]
    _send_all(sends)


def event_buffer_prune(*, now: datetime | None = None) -> int:
    """Delete buffered events older than 24 hours, of every agent. Returns how many buffer
    rows (``AgentEventBatch``, the events of one transaction each) were deleted.

    ``AgentEvents`` prunes as it goes; this catches agents that went quiet. A no-arg
    call suits a periodic job.
    """
    from realtime.models import AgentEventBatch

    cutoff = (now or timezone.now()) - EVENT_BUFFER_MAX_AGE
    deleted, _ = AgentEventBatch.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def bind_event_loop(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Record the event loop that serves this process's WebSockets (default: the running one).

    Every consumer calls this when it connects, so a serving process needs no setup; call it
    yourself only to publish from threads before the first WebSocket connects.
    """
    global _serving_loop
    _serving_loop = loop or asyncio.get_running_loop()


def _send_agent_events(sends: list[tuple[list[str], dict]]) -> None:
    """Send committed agent events, ``(groups, event)`` in seq order, stamped with the commit
    ``timestamp`` (this runs in the on-commit callback, so a client can measure how long an
    event took to reach it after the change became visible).

    Consecutive events for the same groups travel as one ``agent.events`` message: an order's
    ``trade.created`` and ``trade.filled`` wake a watcher of its ``trades`` once. Each group
    still receives its events in seq order, and no event overtakes one sent before it.
    """
    now = utc_text()
    messages: list[tuple[list[str], dict]] = []
    for groups, event in sends:
        event = {**event, "timestamp": now}
        if messages and messages[-1][0] == groups:
            messages[-1][1]["events"].append(event)
        else:
            messages.append((groups, {"type": "agent.events", "events": [event]}))
    _send_all(messages)


def _send_all(sends: list[tuple[list[str], dict]]) -> None:
    """Send channel-layer messages to their groups, in order."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        # Synchronous code on an event-loop thread: never block the loop, send in a task.
        task = running.create_task(_group_send_all(layer, sends))
        _pending_sends.add(task)
        task.add_done_callback(_pending_sends.discard)
        return
    loop = _serving_loop
    if loop is None or not loop.is_running() or loop.is_closed():
        loop = _publishing_loop()
    # The caller waits until its messages are sent (or the timeout): a thread's successive
    # sends therefore reach the layer in the order it made them, and nothing it published is
    # still queued when it returns (a process that exits after its last send loses nothing).
    future = asyncio.run_coroutine_threadsafe(_group_send_all(layer, sends), loop)
    try:
        future.result(timeout=SEND_TIMEOUT_SECONDS)
    except Exception:
        future.cancel()
        CHANNEL_LAYER_DROPPED.inc()
        logger.warning("timed out publishing %d events", len(sends), exc_info=True)


def _publishing_loop() -> asyncio.AbstractEventLoop:
    """The event loop on which this process sends when none serves its WebSockets: started on
    first use, in a daemon thread, and kept for the life of the process.

    The Redis layers keep their connection pools per event loop, so a loop per send (what
    ``async_to_sync`` runs in a thread without one) would connect to Redis and disconnect
    again for every send. A forked child never uses its parent's loop (its thread is not
    copied by the fork): the loop is recorded with the id of the process that started it.
    """
    global _publisher
    publisher = _publisher
    pid = os.getpid()
    if publisher is None or publisher[0] != pid:
        with _publisher_lock:
            publisher = _publisher
            if publisher is None or publisher[0] != pid:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="realtime-publisher", daemon=True
                ).start()
                publisher = _publisher = (pid, loop)
    return publisher[1]


async def _group_send_all(layer, sends: list[tuple[list[str], dict]]) -> None:
    for groups, message in sends:
        await _group_send(layer, groups, message)


async def _group_send(layer, groups: list[str], message: dict) -> None:
    for group in groups:
        try:
            # The group travels with the message: a serving process receives it once and
            # hands it to the connections that joined that group (realtime.fanout).
            await layer.group_send(group, {**message, "group": group})
        except Exception:
            # The channel layer is best effort: clients resync from the buffer by seq.
            CHANNEL_LAYER_DROPPED.inc()
            logger.warning("could not publish %s to %s", message["type"], group, exc_info=True)
