"""The load generator: one process, one asyncio loop, raw HTTP/1.1 keep-alive connections.

Started by ``bench/run.py`` as a separate process (so its CPU is not the server's) with a
JSON plan; prints one JSON result on stdout. Each phase is bounded both in time (``seconds``)
and in request count (``max_requests``), whichever comes first.

Why raw asyncio streams rather than an HTTP library: the generator shares the machine's two
cores with the server, so it must cost as little CPU per request as possible; a keep-alive
HTTP/1.1 client over ``asyncio.open_connection`` is ~60 lines and needs no extra package.
WebSocket clients are a bare asyncio protocol too (``FanoutClient``).

The plan's ``base_url`` is the HTTP server; ``ws_url``, when given, the WebSocket server (the
production processes: gunicorn and uvicorn on ports of their own). One phase per run
(``plan["phase"]``, see ``main``): ``bench/run.py`` changes the server between phases and reads
the server processes' CPU time around each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import resource
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

SYMBOLS = ["AAPL", "GOOGL", "MSFT", "AMZN", "TSLA"]


# --- a minimal keep-alive HTTP/1.1 client ---------------------------------------------------


class HttpConnection:
    """One keep-alive connection; ``request`` sends and reads one exchange (no pipelining)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        # Whether the last answer carried a Retry-After header.
        self.retry_after = False

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, *, headers: dict | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        if self.reader is not None and self.reader.at_eof():
            await self.close()  # the server closed the idle keep-alive connection
        if self.writer is None:
            await self._connect()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method in {"POST", "PUT", "PATCH"}:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin1") + body)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        status_line, *header_lines = head.decode("latin1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length, chunked, close = None, False, False
        self.retry_after = False
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "retry-after":
                self.retry_after = bool(value.strip())
            elif name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            data = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data += await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                del data[-2:]
            payload = bytes(data[:-2]) if data.endswith(b"\r\n") else bytes(data)
        elif length is not None:
            payload = await self.reader.readexactly(length)
        else:
            payload = await self.reader.read()
            close = True
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):  # the peer may already be gone
                await self.writer.wait_closed()
        self.reader = self.writer = None


# --- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summarize(
    latencies: list[float], errors: int, elapsed: float, statuses: dict, refused: int = 0
) -> dict:
    """``ok``: answered as expected; ``refused``: 429/503 with ``Retry-After`` (answered, not
    done); ``errors``: anything else, a broken connection or no answer in time."""
    values = sorted(latencies)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "requests": len(values) + errors + refused,
        "ok": len(values),
        "refused": refused,
        "errors": errors,
        "statuses": statuses,
        "seconds": round(elapsed, 2),
        "rps": round(len(values) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": ms(percentile(values, 50)),
        "p99_ms": ms(percentile(values, 99)),
        "p999_ms": ms(percentile(values, 99.9)),
        "max_ms": ms(values[-1] if values else None),
    }


# --- HTTP phases ------------------------------------------------------------------------------


async def run_http_phase(
    *,
    host: str,
    port: int,
    concurrency: int,
    seconds: float,
    max_requests: int,
    make_request,
    rate: float | None = None,
    timeout: float = 60.0,
) -> tuple[dict, list]:
    """Run ``concurrency`` connections, each sending ``make_request(i)`` back to back, until
    ``seconds`` elapse or ``max_requests`` were sent. ``make_request`` returns (method, path,
    headers, body, expected_status, tag); the tags of successful requests are returned.

    With ``rate``, request ``i`` is sent at ``i / rate`` seconds from the start (by whichever
    connection is free) rather than as soon as a connection is: an offered load, not the most
    the server takes (open loop). Its latency then counts from that moment, so a request that
    waited for a free connection is as late as the server made it.

    A request not answered within ``timeout`` seconds is an error (``statuses["timeout"]``);
    a 429 or 503 that carries ``Retry-After`` is a refusal, counted apart from the errors."""
    counter = itertools.count()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    tags: list = []
    errors = refused = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal errors, refused
        connection = HttpConnection(host, port)
        try:
            while time.perf_counter() < deadline:
                n = next(counter)
                if n >= max_requests:
                    return
                method, path, headers, body, expected, tag = make_request(n)
                t0 = time.perf_counter()
                if rate is not None:
                    due = started + n / rate
                    if due >= deadline:
                        return
                    if due > t0:
                        await asyncio.sleep(due - t0)
                    t0 = due
                try:
                    status, payload = await asyncio.wait_for(
                        connection.request(method, path, headers=headers, body=body), timeout
                    )
                except TimeoutError:
                    errors += 1
                    statuses["timeout"] = statuses.get("timeout", 0) + 1
                    await connection.close()
                    continue
                except Exception:
                    errors += 1
                    statuses["exception"] = statuses.get("exception", 0) + 1
                    await asyncio.sleep(0.01)
                    continue
                elapsed = time.perf_counter() - t0
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == expected:
                    latencies.append(elapsed)
                    if tag is not None:
                        tags.append((tag, payload))
                elif status in (429, 503) and connection.retry_after:
                    refused += 1
                else:
                    errors += 1
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return summarize(latencies, errors, elapsed, statuses, refused), tags


def trade_requests(plan: dict):
    """A market buy of one share, cycling over every agent (and its owner's token)."""
    pairs = [(owner["token"], agent) for owner in plan["owners"] for agent in owner["agents"]]
    rng = random.Random(7)

    def make(n: int):
        token, agent = pairs[n % len(pairs)]
        body = json.dumps(
            {"symbol": rng.choice(SYMBOLS), "side": "buy", "type": "market", "quantity": "1"}
        ).encode()
        headers = {
            "Authorization": f"Token {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        return "POST", f"/api/v1/agents/{agent}/trades", headers, body, 201, agent

    return make


def read_requests(plan: dict):
    pairs = [(owner["token"], agent) for owner in plan["owners"] for agent in owner["agents"]]

    def make(n: int):
        token, agent = pairs[n % len(pairs)]
        headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        return "GET", f"/api/v1/agents/{agent}/trades?page_size=50", headers, b"", 200, None

    return make


def health_requests(_plan: dict):
    def make(_n: int):
        return "GET", "/health/live", {"Accept": "application/json"}, b"", 200, None

    return make


# --- WebSocket watchers -----------------------------------------------------------------------


class LoopLag:
    """Samples how late this event loop wakes a task that sleeps 10 ms (its scheduling lag)."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            self.samples.append(max(time.perf_counter() - started - 0.01, 0.0))


class FanoutClient(asyncio.Protocol):
    """One WebSocket client watching one agent's ``trades`` stream and, with ``market``, the
    market channel.

    The client side of RFC 6455 on a bare asyncio protocol, as the HTTP client above. The
    clients receive a frame per watcher for each market step, in the process that also drives
    the orders, and however late this process's own loop is goes into the latencies it
    measures; so it must spend as little as possible per frame (docs/performance.md has what
    the ``websockets`` package cost). Here frames are parsed where they arrive and only
    ``trade.filled`` ones are decoded; the receive time is that of the read. A tick is
    remembered by its frame's bytes (the server encodes each tick once, so every watcher
    receives the same bytes), with the time it first reached any client in ``first_seen``."""

    def __init__(
        self, host: str, port: int, token: str, agent: str, market: bool, first_seen: dict
    ):
        self.host, self.port, self.token, self.agent = host, port, token, agent
        self.market = market
        self.latencies: dict[str, float] = {}  # trade id -> commit to receipt, seconds
        self.ticks: set[bytes] = set()
        self.first_seen = first_seen
        # Seconds from the start of the connections until this one was subscribed.
        self.subscribed_after: float | None = None
        self.ready = asyncio.Event()
        self.failed: str | None = None
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._subscribed = 0
        self._lost: asyncio.Future | None = None

    async def run(self) -> None:
        """Connect, subscribe and watch until cancelled or disconnected."""
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, self.host, self.port), timeout=60
            )
            # A live client pings within the server's idle timeout (WS_IDLE_TIMEOUT_SECONDS,
            # 120 s by default) to keep its connection.
            while not self._lost.done():
                await asyncio.wait([self._lost], timeout=PING_SECONDS)
                if not self._lost.done() and self.ready.is_set():
                    self._send_text(json.dumps({"action": "ping"}))
        except Exception as exc:
            self.failed = self.failed or f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            if self._transport is not None:
                self._transport.close()

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self._transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /ws/?token={self.token} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: http://{self.host}:{self.port}\r\n\r\n".encode()
        )

    def connection_lost(self, exc) -> None:
        if self.failed is None and not self._lost.done():
            self.failed = f"disconnected: {exc}"
        if not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        received_at = time.time()
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._fail(f"handshake answered {bytes(buffer[:40])!r}")
                return
            del buffer[: end + 4]
            self._upgraded = True
            if self.market:
                self._send_text(json.dumps({"action": "subscribe", "channel": "market"}))
            self._send_text(
                json.dumps({"action": "subscribe", "channel": "trades", "agent_id": self.agent})
            )
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if size - position < 4:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 4]), 4
            elif length == 127:
                if size - position < 10:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 10]), 10
            end = position + header + length
            if end > size:
                break
            payload = bytes(buffer[position + header : end])
            position = end
            opcode = first & 0x0F
            if not first & 0x80 or second & 0x80:
                self._fail("a fragmented or masked frame from the server")
                return
            if opcode == 0x1:
                self._on_text(payload, received_at)
            elif opcode == 0x8:
                self._fail(f"closed by the server: {payload[:2].hex()}")
                return
            elif opcode == 0x9:
                self._send_frame(0xA, payload)  # a ping is answered, as RFC 6455 requires
        del buffer[:position]

    # --- frames ----------------------------------------------------------------------------

    def _on_text(self, payload: bytes, received_at: float) -> None:
        if FILLED in payload:
            message = json.loads(payload)
            committed = datetime.fromisoformat(message["timestamp"]).timestamp()
            self.latencies[message["data"]["id"]] = received_at - committed
        elif MARKET_PRICE in payload:
            self.ticks.add(payload)
            self.first_seen.setdefault(payload, received_at)
        elif json.loads(payload).get("type") == "subscribed":
            self._subscribed += 1
            if self._subscribed == (2 if self.market else 1):
                self.ready.set()

    def _send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        """A client frame: masked, as RFC 6455 requires; these are a few hundred bytes."""
        mask = os.urandom(4)
        length = len(payload)
        first = 0x80 | opcode
        header = bytes([first, 0x80 | length]) if length < 126 else bytes([first, 0xFE])
        if length >= 126:
            header += length.to_bytes(2)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self._transport.write(header + mask + masked)

    def _fail(self, reason: str) -> None:
        self.failed = self.failed or reason
        self._transport.close()


PING_SECONDS = 90

# How the server's frames name these events (json.dumps' default separators).
FILLED = b'"event": "trade.filled"'
MARKET_PRICE = b'"event": "market.price"'


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes (the WebSocket server), from /proc."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def redis_used_mb(url: str | None) -> float | None:
    if not url:
        return None
    import redis

    return round(redis.Redis.from_url(url).info("memory")["used_memory"] / 2**20, 1)


async def connect_all(
    clients: list[FanoutClient], parallel: int, timeout: float
) -> tuple[list[asyncio.Task], float]:
    """Start every client, at most ``parallel`` handshakes in flight at once (a burst of ten
    thousand would only measure the accept backlog); each must be subscribed within
    ``timeout`` seconds of its start, and none starts after ``timeout`` seconds. Returns the
    clients' tasks and the seconds until the last was subscribed."""
    gate = asyncio.Semaphore(parallel)
    tasks: list[asyncio.Task] = []
    give_up = time.perf_counter() + timeout

    async def start(client: FanoutClient) -> None:
        async with gate:
            if time.perf_counter() > give_up:
                client.failed = f"not started within {timeout:.0f} s"
                return
            tasks.append(asyncio.create_task(client.run()))
            try:
                await asyncio.wait_for(client.ready.wait(), timeout)
            except TimeoutError:
                client.failed = client.failed or f"not subscribed within {timeout:.0f} s"
            if client.failed is None:
                client.subscribed_after = time.perf_counter() - started

    started = time.perf_counter()
    await asyncio.gather(*(start(c) for c in clients))
    return tasks, time.perf_counter() - started


async def run_watch(plan: dict, host: str, port: int, ws: tuple[str, int]) -> dict:
    """``watchers`` WebSocket clients, each on one agent's trades (``market_watchers`` of them
    on the market channel too), then market orders offered open-loop at ``rate`` per second
    for ``seconds`` while they watch: what reached them, how late, and whether they stayed.

    Each ``trade.filled`` event carries the server's commit time (``timestamp``, stamped in
    the on-commit callback); the client subtracts it from its receive time (same machine,
    same clock). Fills expected: for each order answered 201, one event per client watching
    its agent. Ticks expected: every tick that reached any client during the orders, once per
    market watcher."""
    owners = plan["owners"]
    pairs = [(owner["token"], agent) for owner in owners for agent in owner["agents"]]
    first_seen: dict[bytes, float] = {}
    clients = [
        FanoutClient(*ws, *pairs[i % len(pairs)], i < plan["market_watchers"], first_seen)
        for i in range(plan["watchers"])
    ]
    ws_pids = plan.get("ws_pids", [])
    rss_before, redis_before = rss_mb(ws_pids), redis_used_mb(plan.get("redis_url"))
    tasks, connect_seconds = await connect_all(
        clients, plan.get("connect_parallel", 200), plan.get("connect_timeout", 60)
    )
    connected = [c for c in clients if c.failed is None]
    await asyncio.sleep(1.0)  # the server's allocations after the last handshake settle
    rss_connected, redis_connected = rss_mb(ws_pids), redis_used_mb(plan.get("redis_url"))

    stop = asyncio.Event()
    lag = LoopLag()
    lag_task = asyncio.create_task(lag.run(stop))
    window_start = time.time()
    summary, tags = await run_http_phase(
        host=host,
        port=port,
        concurrency=plan["concurrency"],
        seconds=plan["seconds"],
        max_requests=plan["max_requests"],
        make_request=trade_requests(plan),
        rate=plan["rate"],
    )
    window_end = time.time()
    filled_by_agent: dict[str, set[str]] = {}
    for agent, payload in tags:
        filled_by_agent.setdefault(agent, set()).add(json.loads(payload)["id"])
    expected_fills = sum(len(filled_by_agent.get(c.agent, ())) for c in connected)
    market_watchers = [c for c in connected if c.market]

    def window_ticks() -> set[bytes]:
        return {k for k, t in first_seen.items() if window_start <= t <= window_end}

    def delivered_now() -> tuple[int, int, int]:
        fills = sum(
            len(c.latencies.keys() & filled_by_agent.get(c.agent, set())) for c in connected
        )
        ticks = window_ticks()
        return fills, sum(len(c.ticks & ticks) for c in market_watchers), len(ticks)

    drain_deadline = time.perf_counter() + plan["drain_seconds"]
    while time.perf_counter() < drain_deadline:
        fills, ticks, tick_count = delivered_now()
        if fills >= expected_fills and ticks >= tick_count * len(market_watchers):
            break
        await asyncio.sleep(0.2)
    fills, ticks, tick_count = delivered_now()
    stop.set()
    await lag_task
    kept = sum(1 for c in connected if c.failed is None)
    failures = [c.failed for c in clients if c.failed]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    latencies = sorted(
        c.latencies[trade]
        for c in connected
        for trade in filled_by_agent.get(c.agent, ())
        if trade in c.latencies
    )
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    expected_ticks = tick_count * len(market_watchers)
    per_thousand = None
    if connected:
        per_thousand = round((rss_connected - rss_before) / len(connected) * 1000, 1)
    return {
        "watchers": len(clients),
        "market_watchers": sum(1 for c in clients if c.market),
        "connected": len(connected),
        "connect_seconds": round(connect_seconds, 2),
        "connected_within": {
            f"{limit}s": sum(1 for c in connected if (c.subscribed_after or float("inf")) <= limit)
            for limit in (10, 30, 60)
        },
        "kept": kept,
        "failures": failures[:5],
        "failure_count": len(failures),
        "ws_rss_mb": {"before": rss_before, "connected": rss_connected},
        "ws_rss_mb_per_1000": per_thousand,
        "redis_used_mb": {"before": redis_before, "connected": redis_connected},
        "offered_rate": plan["rate"],
        "orders": summary,
        "fills_expected": expected_fills,
        "fills_delivered": fills,
        "fills_delivered_pct": round(100 * fills / expected_fills, 2) if expected_fills else None,
        "ticks_expected": expected_ticks,
        "ticks_delivered": ticks,
        "ticks_delivered_pct": round(100 * ticks / expected_ticks, 2) if expected_ticks else None,
        "fill_latency_p50_ms": ms(percentile(latencies, 50)),
        "fill_latency_p99_ms": ms(percentile(latencies, 99)),
        "fill_latency_max_ms": ms(latencies[-1] if latencies else None),
        # How late this process's own loop ran its tasks meanwhile: part of every latency
        # above is the load generator's, not the server's.
        "generator_loop_lag_p50_ms": ms(percentile(sorted(lag.samples), 50)),
        "generator_loop_lag_p99_ms": ms(percentile(sorted(lag.samples), 99)),
    }


# --- main -------------------------------------------------------------------------------------

REQUESTS = {"health": health_requests, "orders": trade_requests, "reads": read_requests}


async def main(plan: dict) -> dict:
    """One phase per run: ``health``, ``orders``, ``reads`` (closed loop, ``concurrency``
    connections: the most the server takes), ``overload`` (orders from ``concurrency``
    connections, each answer awaited up to ``timeout`` s) or ``watch`` (``run_watch``)."""
    parts = urlsplit(plan["base_url"])
    host, port = parts.hostname, parts.port
    phase = plan["phase"]
    if phase == "watch":
        ws = urlsplit(plan.get("ws_url") or plan["base_url"])
        return await run_watch(plan, host, port, (ws.hostname, ws.port))
    kind = "orders" if phase == "overload" else phase
    summary, _ = await run_http_phase(
        host=host,
        port=port,
        concurrency=plan["concurrency"],
        seconds=plan["seconds"],
        max_requests=plan["max_requests"],
        make_request=REQUESTS[kind](plan),
        rate=plan.get("rate"),
        timeout=plan.get("timeout", 60.0),
    )
    return summary


if __name__ == "__main__":
    # Ten thousand WebSocket clients need as many descriptors: the soft limit up to the hard.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(sys.argv[1]) as plan_file:
        plan = json.load(plan_file)
    print(json.dumps(asyncio.run(main(plan))))
