"""The load generator: one process, one asyncio loop, raw HTTP/1.1 keep-alive connections.

Started by ``bench/run.py`` as a separate process (so its CPU is not the server's) with a
JSON plan; prints one JSON result on stdout. Each phase is bounded both in time (``seconds``)
and in request count (``max_requests``), whichever comes first.

Why raw asyncio streams rather than an HTTP library: the generator shares the machine's two
cores with the server, so it must cost as little CPU per request as possible; a keep-alive
HTTP/1.1 client over ``asyncio.open_connection`` is ~60 lines and needs no extra package.
WebSocket clients are a bare asyncio protocol too (``FanoutClient``).

The plan's ``base_url`` is the HTTP server; ``ws_url``, when given, the WebSocket server (the
production processes: gunicorn and daphne on ports of their own).

Phases (in this order, all against one server run):
- ``baseline``: ``GET /health/live`` from ``concurrency`` connections: the stack's ceiling.
- ``trades``: auto-approved market buys ``POST /api/v1/agents/{id}/trades``, each connection
  cycling over the agents: trades/s, latency percentiles, errors (any status but 201).
- ``reads``: ``GET /api/v1/agents/{id}/trades?page_size=50``.
- ``fanout``: ``ws_clients`` WebSocket clients subscribe to the market and to one agent's
  ``trades`` stream, then orders run twice: at the offered rate ``fanout_rate`` (one order
  every 1/rate s, whichever connection is free: the fan-out's own latency on a machine with
  cores to spare), then as fast as ``concurrency`` connections go (the fan-out under the full
  trade load, the machine saturated). Each ``trade.filled`` event carries the server's commit
  time (``timestamp``, stamped in the on-commit callback); the client subtracts it from its
  receive time (same machine, same clock). Delivered is compared with what should have
  arrived: for each order the load answered 201, one event per client watching that agent.
- ``scrape`` helpers read ``/metrics`` before and after a phase (gRPC call time and count).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import sys
import time
from datetime import datetime
from urllib.parse import urlsplit

SYMBOLS = ["AAPL", "GOOGL", "MSFT", "AMZN", "TSLA"]


# --- a minimal keep-alive HTTP/1.1 client ---------------------------------------------------


class HttpConnection:
    """One keep-alive connection; ``request`` sends and reads one exchange (no pipelining)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, *, headers: dict | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
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
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
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


def summarize(latencies: list[float], errors: int, elapsed: float, statuses: dict) -> dict:
    values = sorted(latencies)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "requests": len(values) + errors,
        "ok": len(values),
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
) -> tuple[dict, list]:
    """Run ``concurrency`` connections, each sending ``make_request(i)`` back to back, until
    ``seconds`` elapse or ``max_requests`` were sent. ``make_request`` returns (method, path,
    headers, body, expected_status, tag); the tags of successful requests are returned.

    With ``rate``, request ``i`` is sent at ``i / rate`` seconds from the start (by whichever
    connection is free) rather than as soon as a connection is: an offered load, not the most
    the server takes. Its latency then counts from that moment, so a request that waited for a
    free connection is as late as the server made it."""
    counter = itertools.count()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    tags: list = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal errors
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
                    status, payload = await connection.request(
                        method, path, headers=headers, body=body
                    )
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
                else:
                    errors += 1
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(latencies, errors, time.perf_counter() - started, statuses), tags


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


# --- /metrics ---------------------------------------------------------------------------------


async def scrape_grpc(host: str, port: int, attempts: int, processes: int = 1) -> dict:
    """gRPC client time and call count per ``service/method``, summed over server processes.

    With several worker processes behind one port, each new connection may land on any of
    them (and an idle one tends to win every accept); every process exposes its own pid
    (``trading_process_id``), which tells them apart. Up to ``attempts`` rounds of
    ``processes`` + 1 connections opened together, until every process has answered; the last
    scrape of each is kept.
    """
    per_process: dict[str, dict] = {}

    async def scrape_once(connection: HttpConnection) -> None:
        try:
            status, payload = await connection.request("GET", "/metrics")
        finally:
            await connection.close()
        if status != 200:
            return
        identity, values = "?", {}
        for line in payload.decode().splitlines():
            if line.startswith("trading_process_id "):
                identity = line.split()[1]
            elif line.startswith(
                (
                    "trading_grpc_call_duration_seconds_sum{",
                    "trading_grpc_call_duration_seconds_count{",
                )
            ):
                name, _, rest = line.partition("{")
                labels, _, value = rest.rpartition("} ")
                fields = dict(item.split("=", 1) for item in labels.split(",") if "=" in item)
                key = f"{fields['service'].strip(chr(34))}/{fields['method'].strip(chr(34))}"
                kind = "sum" if name.endswith("_sum") else "count"
                entry = values.setdefault(key, {"sum": 0.0, "count": 0.0})
                entry[kind] += float(value)
        per_process[identity] = values

    for _ in range(attempts):
        connections = [HttpConnection(host, port) for _ in range(processes + 1)]
        for connection in connections:  # all connected before any asks: spread over workers
            await connection._connect()
        await asyncio.gather(*(scrape_once(c) for c in connections))
        if len(per_process) >= processes:
            break
    total: dict[str, dict] = {}
    for values in per_process.values():
        for key, entry in values.items():
            agg = total.setdefault(key, {"sum": 0.0, "count": 0.0})
            agg["sum"] += entry["sum"]
            agg["count"] += entry["count"]
    return {"processes": len(per_process), "calls": total}


def grpc_delta(before: dict, after: dict, trades: int) -> dict:
    out = {"processes_seen": [before["processes"], after["processes"]], "per_method": {}}
    total_seconds = 0.0
    total_calls = 0.0
    for key, entry in after["calls"].items():
        prior = before["calls"].get(key, {"sum": 0.0, "count": 0.0})
        seconds = entry["sum"] - prior["sum"]
        calls = entry["count"] - prior["count"]
        if calls <= 0:
            continue
        total_seconds += seconds
        total_calls += calls
        out["per_method"][key] = {
            "calls": int(calls),
            "mean_ms": round(seconds / calls * 1000, 3),
            "calls_per_trade": round(calls / trades, 3) if trades else None,
        }
    out["ms_per_trade"] = round(total_seconds / trades * 1000, 3) if trades else None
    out["calls_per_trade"] = round(total_calls / trades, 3) if trades else None
    return out


# --- WebSocket fan-out ------------------------------------------------------------------------


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
    """One WebSocket client watching the market and one agent's ``trades`` stream.

    The client side of RFC 6455 on a bare asyncio protocol, as the HTTP client above. The
    clients receive five thousand frames for each market step, in the process that also
    drives the orders; with the ``websockets`` package this process took 0.15 of a core
    meanwhile (0.28 when it decoded every frame) and its own loop lag, p99 40-100 ms, went
    into the latencies it measured. Here frames are parsed where they arrive and only
    ``trade.filled`` ones are decoded (0.08 of a core, loop lag p99 16 ms); the receive time
    is that of the read."""

    def __init__(self, host: str, port: int, token: str, agent: str):
        self.host, self.port, self.token, self.agent = host, port, token, agent
        self.latencies: dict[str, float] = {}  # trade id -> commit to receipt, seconds
        self.market_ticks = 0
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
            await self._lost
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
        del buffer[:position]

    # --- frames ----------------------------------------------------------------------------

    def _on_text(self, payload: bytes, received_at: float) -> None:
        if FILLED in payload:
            message = json.loads(payload)
            committed = datetime.fromisoformat(message["timestamp"]).timestamp()
            self.latencies[message["data"]["id"]] = received_at - committed
        elif MARKET_PRICE in payload:
            self.market_ticks += 1
        elif json.loads(payload).get("type") == "subscribed":
            self._subscribed += 1
            if self._subscribed == 2:
                self.ready.set()

    def _send_text(self, text: str) -> None:
        """A client frame: masked, as RFC 6455 requires; these are a few hundred bytes."""
        payload, mask = text.encode(), os.urandom(4)
        length = len(payload)
        header = bytes([0x81, 0x80 | length]) if length < 126 else bytes([0x81, 0xFE])
        if length >= 126:
            header += length.to_bytes(2)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self._transport.write(header + mask + masked)

    def _fail(self, reason: str) -> None:
        self.failed = self.failed or reason
        self._transport.close()


# How the server's frames name these events (json.dumps' default separators).
FILLED = b'"event": "trade.filled"'
MARKET_PRICE = b'"event": "market.price"'


async def run_fanout(
    plan: dict, host: str, port: int, clock: PhaseClock, ws: tuple[str, int] | None = None
) -> dict:
    """Connect the clients, then run the orders twice while they watch: first at the offered
    rate ``fanout_rate`` (the fan-out's own latency, the machine not saturated), then as many
    as ``concurrency`` connections take (the fan-out under the full trade load). The keys of
    the full-load stage are at the top level; the paced stage's are under ``paced``. The
    orders go to ``host:port``, the clients connect to ``ws`` (default: the same address)."""
    owners = plan["owners"]
    pairs = [(owner["token"], agent) for owner in owners for agent in owner["agents"]]
    ws_host, ws_port = ws or (host, port)
    clients = [
        FanoutClient(ws_host, ws_port, *pairs[i % len(pairs)]) for i in range(plan["ws_clients"])
    ]
    # Connect in batches: a thousand simultaneous handshakes only measure the accept backlog.
    tasks = []
    connect_started = time.perf_counter()
    for start in range(0, len(clients), 100):
        batch = clients[start : start + 100]
        tasks += [asyncio.create_task(c.run()) for c in batch]
        await asyncio.wait([asyncio.create_task(c.ready.wait()) for c in batch], timeout=60)
    connect_seconds = time.perf_counter() - connect_started
    for client in clients:
        if not client.ready.is_set() and client.failed is None:
            client.failed = "not subscribed within 60 s"
    connected = [c for c in clients if c.failed is None]
    stages = {}
    if plan.get("fanout_rate"):
        with clock.phase("fanout_paced"):
            stages["paced"] = await _fanout_stage(plan, host, port, connected, plan["fanout_rate"])
    with clock.phase("fanout"):
        stages["full"] = await _fanout_stage(plan, host, port, connected, None)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "clients": len(clients),
        "connected": len(connected),
        "failed": [c.failed for c in clients if c.failed][:5],
        "connect_seconds": round(connect_seconds, 2),
        "market_ticks_received": sum(c.market_ticks for c in connected),
        **stages["full"],
        **({"paced": stages["paced"]} if "paced" in stages else {}),
    }


async def _fanout_stage(
    plan: dict, host: str, port: int, connected: list[FanoutClient], rate: float | None
) -> dict:
    """Orders while ``connected`` watch; what reached them, and how late."""
    stop = asyncio.Event()
    lag = LoopLag()
    lag_task = asyncio.create_task(lag.run(stop))
    summary, tags = await run_http_phase(
        host=host,
        port=port,
        concurrency=plan["concurrency"],
        seconds=plan["fanout_paced_seconds"] if rate else plan["fanout_seconds"],
        max_requests=plan["max_requests"],
        make_request=trade_requests(plan),
        rate=rate,
    )
    filled_by_agent: dict[str, set[str]] = {}
    for agent, payload in tags:
        filled_by_agent.setdefault(agent, set()).add(json.loads(payload)["id"])
    expected = sum(len(filled_by_agent.get(c.agent, ())) for c in connected)

    def delivered_now() -> int:
        return sum(len(c.latencies.keys() & filled_by_agent.get(c.agent, set())) for c in connected)

    # Let in-flight events drain (bounded).
    drain_deadline = time.perf_counter() + plan["drain_seconds"]
    while delivered_now() < expected and time.perf_counter() < drain_deadline:
        await asyncio.sleep(0.2)
    delivered = delivered_now()
    stop.set()
    await lag_task
    latencies = sorted(
        c.latencies[trade]
        for c in connected
        for trade in filled_by_agent.get(c.agent, ())
        if trade in c.latencies
    )
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        **({"offered_rate": rate} if rate else {}),
        "trades": summary,
        "events_expected": expected,
        "events_delivered": delivered,
        "delivered_pct": round(100 * delivered / expected, 2) if expected else None,
        "latency_p50_ms": ms(percentile(latencies, 50)),
        "latency_p99_ms": ms(percentile(latencies, 99)),
        "latency_max_ms": ms(latencies[-1] if latencies else None),
        # How late this process's own loop ran its tasks meanwhile: part of every latency
        # above is the load generator's, not the server's.
        "generator_loop_lag_p50_ms": ms(percentile(sorted(lag.samples), 50)),
        "generator_loop_lag_p99_ms": ms(percentile(sorted(lag.samples), 99)),
    }


# --- main -------------------------------------------------------------------------------------


class PhaseClock:
    """Wall-clock bounds and this process's CPU time of each phase (``results["phase_times"]``),
    so ``bench/run.py`` can tell how the machine's cores were shared during it."""

    def __init__(self) -> None:
        self.times: dict[str, dict] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start, cpu = time.time(), time.process_time()
        try:
            yield
        finally:
            self.times[name] = {
                "start": start,
                "end": time.time(),
                "load_cpu_seconds": round(time.process_time() - cpu, 3),
            }


async def main(plan: dict) -> dict:
    parts = urlsplit(plan["base_url"])
    host, port = parts.hostname, parts.port
    common = {
        "host": host,
        "port": port,
        "concurrency": plan["concurrency"],
        "max_requests": plan["max_requests"],
    }
    results: dict = {}
    clock = PhaseClock()
    phases = plan["phases"]
    if "baseline" in phases:
        with clock.phase("baseline"):
            results["baseline"], _ = await run_http_phase(
                **common, seconds=plan["seconds"], make_request=health_requests(plan)
            )
    if "trades" in phases:
        before = await scrape_grpc(host, port, plan["scrape_attempts"], plan["processes"])
        with clock.phase("trades"):
            results["trades"], _ = await run_http_phase(
                **common, seconds=plan["seconds"], make_request=trade_requests(plan)
            )
        after = await scrape_grpc(host, port, plan["scrape_attempts"], plan["processes"])
        results["grpc"] = grpc_delta(before, after, results["trades"]["ok"])
    if "reads" in phases:
        with clock.phase("reads"):
            results["reads"], _ = await run_http_phase(
                **common, seconds=plan["seconds"], make_request=read_requests(plan)
            )
    if "fanout" in phases and plan["ws_clients"] > 0:
        ws = urlsplit(plan.get("ws_url") or plan["base_url"])
        results["fanout"] = await run_fanout(plan, host, port, clock, (ws.hostname, ws.port))
    results["phase_times"] = clock.times
    return results


if __name__ == "__main__":
    with open(sys.argv[1]) as plan_file:
        plan = json.load(plan_file)
    print(json.dumps(asyncio.run(main(plan))))
