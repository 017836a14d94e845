"""The WebSocket side of the runner: market ticks and the agents' own events, resumable.

One connection per owner's token. It subscribes to the ``market`` channel and, for each of
the owner's agents it drives, to ``trades``, ``portfolio`` and ``oversight``. It remembers the
last ``seq`` seen per agent and channel; after a disconnect it reconnects with backoff and
resubscribes with ``since_seq``, so the server replays what was missed. A ``gap`` answer (the
events are no longer kept) asks the runner to resync that agent over REST. An application
``ping`` every 30 s keeps the connection from the server's idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

logger = logging.getLogger("trading_demo.runner")

AGENT_CHANNELS = ("trades", "portfolio", "oversight")
PING_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 30.0
CLOSE_UNAUTHENTICATED = 4401

TickHandler = Callable[[str, str, int], None]
EventHandler = Callable[[str, str, dict, int], Awaitable[None]]
GapHandler = Callable[[str], Awaitable[None]]


def websocket_url(base_url: str) -> str:
    """``http(s)://host[:port]`` → ``ws(s)://host[:port]/ws/``."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/ws/"
    return "ws://" + base.removeprefix("http://") + "/ws/"


class Stream:
    """The live feed of one token: ``on_tick(symbol, price, seq)`` for market prices,
    ``on_event(agent_id, event, data, seq)`` for the agents' events, ``on_gap(agent_id)``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        agent_ids: Iterable[str],
        *,
        on_tick: TickHandler,
        on_event: EventHandler,
        on_gap: GapHandler,
        label: str = "",
    ):
        self.url = websocket_url(base_url)
        self.origin = base_url.rstrip("/")
        self.token = token
        self.agent_ids = list(agent_ids)
        self.on_tick = on_tick
        self.on_event = on_event
        self.on_gap = on_gap
        self.label = label
        self.last_seq: dict[tuple[str, str], int] = {}
        self.connected = asyncio.Event()
        self.connections = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set (or the token is refused)."""
        delay = 1.0
        while not stop.is_set():
            try:
                await self._session(stop)
                delay = 1.0
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code == CLOSE_UNAUTHENTICATED:
                    logger.error("%s: the server refused the token on the WebSocket", self.label)
                    return
                logger.warning("%s: WebSocket closed (%s); reconnecting", self.label, code)
            except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as error:
                logger.warning("%s: WebSocket unavailable (%s); retrying", self.label, error)
            self.connected.clear()
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    async def _session(self, stop: asyncio.Event) -> None:
        async with connect(
            f"{self.url}?token={self.token}",
            origin=self.origin,
            open_timeout=10,
            max_size=2**20,
        ) as socket:
            self.connections += 1
            await socket.send(json.dumps({"action": "subscribe", "channel": "market"}))
            for agent_id in self.agent_ids:
                for channel in AGENT_CHANNELS:
                    await socket.send(json.dumps(self._subscription(agent_id, channel)))
            self.connected.set()
            pinger = asyncio.create_task(self._ping(socket))
            stopper = asyncio.create_task(stop.wait())
            try:
                while True:
                    receiver = asyncio.create_task(socket.recv())
                    done, _ = await asyncio.wait(
                        {receiver, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if receiver not in done:
                        receiver.cancel()
                        return
                    await self._handle(json.loads(receiver.result()))
            finally:
                pinger.cancel()
                stopper.cancel()

    def _subscription(self, agent_id: str, channel: str) -> dict:
        message = {"action": "subscribe", "channel": channel, "agent_id": agent_id}
        seen = self.last_seq.get((agent_id, channel))
        if seen is not None:
            message["since_seq"] = seen
        return message

    async def _ping(self, socket) -> None:
        while True:
            await asyncio.sleep(PING_SECONDS)
            await socket.send(json.dumps({"action": "ping"}))

    async def _handle(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "event":
            if message.get("channel") == "market":
                data = message["data"]
                self.on_tick(data["symbol"], data["price"], int(message["seq"]))
                return
            agent_id, seq = message.get("agent_id"), int(message["seq"])
            key = (agent_id, message["channel"])
            if seq <= self.last_seq.get(key, 0):
                return  # seen before the reconnect
            self.last_seq[key] = seq
            await self.on_event(agent_id, message["event"], message.get("data") or {}, seq)
        elif kind == "gap":
            logger.warning(
                "%s: events of agent %s were missed; resyncing over REST",
                self.label,
                message.get("agent_id"),
            )
            await self.on_gap(message["agent_id"])
        elif kind == "error":
            logger.warning(
                "%s: the server refused a message: %s %s",
                self.label,
                message.get("code"),
                message.get("detail"),
            )
