"""The live WebSocket endpoint ``/ws/`` (SPEC §7): per-agent streams, market ticks, the
operators' oversight feed, resumable by ``seq``.

One connection holds any number of subscriptions. Each subscription joins channel-layer groups
(names from ``realtime.groups``) through the process's ``realtime.fanout``, which receives each
group message once per process and hands it to ``deliver``; an event is forwarded once per
connection, even when several subscriptions (or groups) carry the same event.

Resuming: on ``subscribe`` with ``since_seq`` the consumer joins the groups first, then reads
the buffer. While a subscribe is handled, live messages are held; once the answer and the
replay are sent they are forwarded in the order they came, except those with a ``seq`` already
replayed. Per agent, ``seq`` order is commit order (the increment takes the agent row's lock),
so the replay plus the live messages have neither duplicates nor gaps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from api.representation import utc_text
from observability.metrics import WEBSOCKET_CONNECTIONS
from realtime.fanout import fanout
from realtime.groups import (
    AGENT_CHANNELS,
    CHANNELS,
    agent_control_group,
    agent_group,
    market_group,
    oversight_feed_group,
)
from realtime.services import CONTROL_EVENTS, OVERSIGHT_FEED_EVENTS, bind_event_loop

logger = logging.getLogger("trading_demo.realtime")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_IDLE = 4408
MAX_FRAME_BYTES = 64 * 1024
MAX_SUBSCRIPTIONS = 100
# How many recently forwarded events a connection remembers to drop duplicates.
DELIVERED_MEMORY = 4096


class ProtocolError(Exception):
    """A client message that is answered with ``{"type": "error"}``; the socket stays open."""

    def __init__(self, code: str, detail: str, **context):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.context = context


@dataclass
class Subscription:
    channel: str
    agent_id: str | None
    symbol: str | None
    groups: tuple[str, ...]
    # Highest seq sent by a replay: live copies of those events are dropped.
    replayed_through: int = 0

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        return (self.channel, self.agent_id, self.symbol)

    def describe(self) -> dict:
        return {"channel": self.channel, "agent_id": self.agent_id, "symbol": self.symbol}


@database_sync_to_async
def _user_is_operator(user) -> bool:
    from agents.permissions import is_operator

    return bool(is_operator(user))


@database_sync_to_async
def _agent_visible(*, user, agent_id: str, operator: bool | None) -> tuple[bool, bool | None]:
    """Whether ``user`` may watch the agent (its owner, or an operator), and whether the user
    is an operator (``operator`` as given when it was not asked). An owner watching their own
    agent costs one query; the operator question is asked only for an agent the user does not
    own, and only when ``operator`` is not known yet. One hop to the database thread either
    way."""
    from agents.models import Agent
    from agents.permissions import is_operator

    if Agent.objects.filter(pk=agent_id, owner=user).exists():
        return True, operator
    if operator is None:
        operator = bool(is_operator(user))
    return operator and Agent.objects.filter(pk=agent_id).exists(), operator


@database_sync_to_async
def _read_replay(*, agent_id: str, channel: str, since_seq: int) -> tuple[list[dict], int, int]:
    """The events after ``since_seq``, the oldest buffered seq and the latest seq sent."""
    from agents.models import Agent
    from realtime.selectors import agent_event_oldest_buffered_seq, agent_events_since

    # Events first, then the oldest buffered seq: pruning only raises it, so a check made
    # after the read can only over-report a gap, never hide one.
    events = [
        {
            "type": "event",
            "event": e.event,
            "channel": e.channel,
            "agent_id": str(e.agent_id),
            "data": e.data,
            "timestamp": utc_text(e.created_at),
            "seq": e.seq,
        }
        for e in agent_events_since(agent_id=agent_id, channel=channel, since_seq=since_seq)
    ]
    oldest = agent_event_oldest_buffered_seq(agent_id=agent_id)
    # The agent row keeps the seq of its last committed event (0 before the first).
    latest = Agent.objects.filter(pk=agent_id).values_list("event_seq", flat=True).first() or 0
    # With nothing buffered, the next event's seq: everything before it is gone.
    return events, latest + 1 if oldest is None else oldest, latest


def _event_frame(message: dict) -> dict:
    return {
        "type": "event",
        "event": message["event"],
        "channel": message["channel"],
        "agent_id": message["agent_id"],
        "data": message["data"],
        "timestamp": message["timestamp"],
        "seq": message["seq"],
    }


# Texts of recent events as sent, shared by the connections of this process: a tick or a fill
# watched by many clients is encoded once per process, not once per client.
_texts: OrderedDict[tuple, str] = OrderedDict()
TEXT_MEMORY = 1024


def _event_text(key: tuple, message: dict) -> str:
    """The JSON text of an event's frame (encoded once per process)."""
    cache_key = (*key, message["event"], message["timestamp"])
    text = _texts.get(cache_key)
    if text is None:
        text = _texts[cache_key] = json.dumps(_event_frame(message))
        if len(_texts) > TEXT_MEMORY:
            _texts.popitem(last=False)
    return text


class LiveConsumer:
    """One client connection: authenticated, permission-checked per subscription.

    An ASGI application instance per connection, written to the ASGI WebSocket specification:
    Channels documents its consumer classes as optional (its routing, its origin check and the
    authentication middleware in front of this endpoint serve any ASGI application). Its
    consumers would cost each connection, for every message the client sends and at the
    connect and the close, a hop to the database thread to close stale database connections
    (``AsyncConsumer.dispatch``, ``websocket_disconnect``) and a task per message
    (``await_many_dispatch``), and, with a channel layer, a channel of the connection's own.
    Here every query goes through ``database_sync_to_async``, which closes stale connections
    around each call itself, and live events reach the connection through the process's one
    subscriber (``realtime.fanout``), never through a channel of its own.
    """

    @classmethod
    def as_asgi(cls):
        """The ASGI application: one ``LiveConsumer`` per connection."""

        async def application(scope, receive, send):
            await cls(scope, send).serve(receive)

        return application

    def __init__(self, scope, send):
        self.scope = scope
        self.asgi_send = send

    async def serve(self, receive) -> None:
        """Handle the connection's ASGI messages in order until it is closed."""
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                await self.receive(message.get("text"), message.get("bytes"))
            elif kind == "websocket.connect":
                await self.connect()
            elif kind == "websocket.disconnect":
                await self.disconnect(message.get("code"))
                return

    async def accept(self) -> None:
        await self.asgi_send({"type": "websocket.accept"})

    async def send(self, text: str) -> None:
        await self.asgi_send({"type": "websocket.send", "text": text})

    async def close(self, code: int) -> None:
        await self.asgi_send({"type": "websocket.close", "code": code})

    async def connect(self):
        self.user = self.scope.get("user")
        self.subscriptions: dict[tuple, Subscription] = {}
        self.group_refs: Counter[str] = Counter()
        self.delivered: OrderedDict[tuple, None] = OrderedDict()
        # Live messages that arrive while a subscribe is handled, forwarded after it.
        self.held: list[dict] | None = None
        self.authenticated = False
        self.closing = False
        self.idle_task: asyncio.Task | None = None
        # Accept first so the client sees the close code, not a refused handshake.
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self._close(CLOSE_UNAUTHENTICATED)
            return
        self.authenticated = True
        WEBSOCKET_CONNECTIONS.inc()
        bind_event_loop()
        # Operator or not is asked when a subscription needs it, once per connection.
        self.operator: bool | None = None
        # Agents this connection may watch, asked once each: an agent's owner never changes
        # and agents are never deleted (a terminated agent stays), so the answer holds for as
        # long as the socket is open, as the operator answer does.
        self.visible_agents: set[str] = set()
        loop = asyncio.get_running_loop()
        self.last_seen = loop.time()
        self.window_start = loop.time()
        self.window_count = 0
        self.max_rate = settings.WS_MAX_MESSAGES_PER_SECOND
        self.idle_timeout = settings.WS_IDLE_TIMEOUT_SECONDS
        self.idle_task = asyncio.create_task(self._close_when_idle())

    async def disconnect(self, code):
        # The idle task is dropped as well as cancelled: a cancelled task keeps its
        # CancelledError, whose traceback holds the task's frame and so this consumer. Kept
        # here, it would make a reference cycle of the whole connection (consumer, scope, user,
        # protocol, transport), which only a full garbage collection could free, walking the
        # live connections too; dropped, reference counting frees the connection on close.
        idle_task, self.idle_task = getattr(self, "idle_task", None), None
        if idle_task is not None:
            idle_task.cancel()
        self.closing = True
        groups = fanout(get_channel_layer())
        for group in list(getattr(self, "group_refs", ())):
            await groups.leave(group, self)
        if getattr(self, "authenticated", False):
            self.authenticated = False
            WEBSOCKET_CONNECTIONS.dec()

    # --- client → server ------------------------------------------------------------------

    async def receive(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if not self.authenticated or self.closing:
            return
        loop = asyncio.get_running_loop()
        self.last_seen = loop.time()
        try:
            if not self._within_rate(loop.time()):
                return
            content = self._decode(text_data, bytes_data)
            await self.receive_json(content)
        except ProtocolError as error:
            await self._send({"type": "error", "code": error.code, "detail": error.detail})
        except Exception:
            logger.exception("websocket message failed")
            await self._send(
                {"type": "error", "code": "internal_error", "detail": "the message failed"}
            )

    def _within_rate(self, now: float) -> bool:
        """Count the message in this second's window; raise for the first one over the limit
        (answered with an error), return False for the rest (dropped silently)."""
        if now - self.window_start >= 1.0:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        if self.window_count == self.max_rate + 1:
            raise ProtocolError(
                "rate_limited", f"more than {self.max_rate} messages per second; slow down"
            )
        return self.window_count <= self.max_rate

    @staticmethod
    def _decode(text_data: str | None, bytes_data: bytes | None) -> dict:
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > MAX_FRAME_BYTES:
            raise ProtocolError("frame_too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes")
        if text_data is None:
            raise ProtocolError("invalid_message", "send JSON in text frames")
        try:
            content = json.loads(text_data)
        except ValueError:
            raise ProtocolError("invalid_json", "the frame is not valid JSON") from None
        if not isinstance(content, dict):
            raise ProtocolError("invalid_message", "a message is a JSON object with an action")
        return content

    async def receive_json(self, content: dict) -> None:
        action = content.get("action")
        if action == "ping":
            await self._send({"type": "pong"})
        elif action == "subscribe":
            await self._subscribe(content)
        elif action == "unsubscribe":
            await self._unsubscribe(content)
        else:
            raise ProtocolError(
                "unknown_action", "action must be one of subscribe, unsubscribe, ping"
            )

    async def _subscribe(self, content: dict) -> None:
        self.held = []
        try:
            await self._subscribe_holding(content)
        finally:
            await self._release()

    async def _subscribe_holding(self, content: dict) -> None:
        since_seq = content.get("since_seq")
        if since_seq is not None and (
            not isinstance(since_seq, int) or isinstance(since_seq, bool) or since_seq < 0
        ):
            raise ProtocolError("invalid_message", "since_seq must be a non-negative integer")
        wanted = await self._resolve(content)
        if since_seq is not None and wanted.agent_id is None:
            raise ProtocolError("invalid_message", "since_seq applies to an agent's channels only")
        subscription = self.subscriptions.get(wanted.key)
        if subscription is None:
            if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise ProtocolError(
                    "too_many_subscriptions", f"at most {MAX_SUBSCRIPTIONS} per connection"
                )
            subscription = wanted
            # Join before reading the buffer, so nothing committed meanwhile is missed.
            for group in subscription.groups:
                await self._join(group)
            self.subscriptions[subscription.key] = subscription
        await self._send({"type": "subscribed", **subscription.describe()})
        if since_seq is not None:
            await self._replay(subscription, since_seq)

    async def _unsubscribe(self, content: dict) -> None:
        channel = content.get("channel")
        if channel not in CHANNELS:
            raise ProtocolError("unknown_channel", f"channel must be one of {', '.join(CHANNELS)}")
        key = (channel, self._agent_id(content), self._symbol(content))
        subscription = self.subscriptions.pop(key, None)
        if subscription is not None:
            for group in subscription.groups:
                await self._leave(group)
        channel, agent_id, symbol = key
        await self._send(
            {"type": "unsubscribed", "channel": channel, "agent_id": agent_id, "symbol": symbol}
        )

    async def _resolve(self, content: dict) -> Subscription:
        """The subscription a message asks for, permission-checked."""
        channel = content.get("channel")
        if channel not in CHANNELS:
            raise ProtocolError("unknown_channel", f"channel must be one of {', '.join(CHANNELS)}")
        if channel == "market":
            symbol = self._symbol(content)
            if symbol is not None and symbol not in settings.MARKET_SYMBOLS:
                raise ProtocolError("unknown_symbol", f"no market symbol {symbol}")
            return Subscription("market", None, symbol, (market_group(symbol),))
        agent_id = self._agent_id(content)
        if agent_id is None:
            if channel != "oversight":
                raise ProtocolError("invalid_message", f"channel {channel} needs an agent_id")
            if not await self._operator():
                raise ProtocolError("forbidden", "only operators may watch every approval")
            return Subscription("oversight", None, None, (oversight_feed_group(),))
        if agent_id not in self.visible_agents:
            visible, self.operator = await _agent_visible(
                user=self.user, agent_id=agent_id, operator=self.operator
            )
            if not visible:
                # The same answer whether the agent exists or not, so ids do not leak.
                raise ProtocolError("forbidden", "no such agent among those you may watch")
            self.visible_agents.add(agent_id)
        assert channel in AGENT_CHANNELS
        groups = (agent_group(agent_id, channel), agent_control_group(agent_id))
        return Subscription(channel, agent_id, None, groups)

    async def _operator(self) -> bool:
        if self.operator is None:
            self.operator = await _user_is_operator(self.user)
        return self.operator

    @staticmethod
    def _agent_id(content: dict) -> str | None:
        value = content.get("agent_id")
        if value is None or content.get("channel") == "market":
            return None
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise ProtocolError("invalid_message", "agent_id must be a UUID") from None

    @staticmethod
    def _symbol(content: dict) -> str | None:
        value = content.get("symbol")
        if value is None or content.get("channel") != "market":
            return None
        if not isinstance(value, str):
            raise ProtocolError("invalid_message", "symbol must be a string")
        return value.upper()

    async def _replay(self, subscription: Subscription, since_seq: int) -> None:
        events, oldest_seq, latest_seq = await _read_replay(
            agent_id=subscription.agent_id, channel=subscription.channel, since_seq=since_seq
        )
        if since_seq > latest_seq:
            # The client claims events this server never sent (another server's numbering, a
            # restored database, a client bug): its state cannot be trusted, it must resync.
            await self._send(
                {
                    "type": "gap",
                    "channel": subscription.channel,
                    "agent_id": subscription.agent_id,
                    "since_seq": since_seq,
                    "latest_seq": latest_seq,
                }
            )
            return
        if oldest_seq > since_seq + 1:
            await self._send(
                {
                    "type": "gap",
                    "channel": subscription.channel,
                    "agent_id": subscription.agent_id,
                    "since_seq": since_seq,
                    "oldest_seq": oldest_seq,
                }
            )
            return
        for frame in events:
            self._remember(("agent", frame["agent_id"], frame["seq"]))
            subscription.replayed_through = max(subscription.replayed_through, frame["seq"])
            await self._send(frame)

    # --- channel layer → client -----------------------------------------------------------

    async def deliver(self, message: dict) -> None:
        """A group message this connection joined (called by ``realtime.fanout``)."""
        if self.closing:
            return
        if self.held is not None:
            self.held.append(message)
            return
        await self._handle(message)

    async def _release(self) -> None:
        """Forward the held messages, then deliver as they come."""
        while self.held:
            await self._handle(self.held.pop(0))
        self.held = None

    async def _handle(self, message: dict) -> None:
        if message["type"] == "agent.events":
            await self.agent_events(message)
        elif message["type"] == "market.prices":
            await self.market_prices(message)

    async def agent_events(self, message: dict) -> None:
        """Agents' events in seq order (``agent.events``), from a group this connection joined."""
        for event in message["events"]:
            agent_id, seq = event["agent_id"], event["seq"]
            wanted = False
            for subscription in self.subscriptions.values():
                if subscription.agent_id == agent_id:
                    if (
                        subscription.channel == event["channel"] or event["event"] in CONTROL_EVENTS
                    ) and seq > subscription.replayed_through:
                        wanted = True
                elif (
                    subscription.channel == "oversight"
                    and subscription.agent_id is None
                    and event["event"] in OVERSIGHT_FEED_EVENTS
                ):
                    wanted = True
            await self._forward(("agent", agent_id, seq), event, wanted)

    async def market_prices(self, message: dict) -> None:
        """The ``market.price`` ticks of one market step (``market.prices``)."""
        for event in message["events"]:
            symbol = event["data"]["symbol"]
            wanted = ("market", None, None) in self.subscriptions or (
                "market",
                None,
                symbol,
            ) in self.subscriptions
            await self._forward(("market", symbol, event["seq"]), event, wanted)

    async def _forward(self, key: tuple, message: dict, wanted: bool) -> None:
        if not wanted or key in self.delivered:
            return
        self._remember(key)
        if not self.closing:
            await self.send(_event_text(key, message))

    def _remember(self, key: tuple) -> None:
        self.delivered[key] = None
        self.delivered.move_to_end(key)
        while len(self.delivered) > DELIVERED_MEMORY:
            self.delivered.popitem(last=False)

    # --- plumbing ---------------------------------------------------------------------------

    async def _join(self, group: str) -> None:
        if self.group_refs[group] == 0:
            await fanout(get_channel_layer()).join(group, self)
        self.group_refs[group] += 1

    async def _leave(self, group: str) -> None:
        self.group_refs[group] -= 1
        if self.group_refs[group] <= 0:
            del self.group_refs[group]
            await fanout(get_channel_layer()).leave(group, self)

    async def _send(self, content: dict) -> None:
        if not self.closing:
            await self.send(json.dumps(content))

    async def _close(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            await self.close(code)

    async def _close_when_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            remaining = self.last_seen + self.idle_timeout - loop.time()
            if remaining <= 0:
                await self._close(CLOSE_IDLE)
                return
            await asyncio.sleep(remaining)
