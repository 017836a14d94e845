"""Where an order's time goes: py-spy on the production processes while they serve orders.

``python bench/profile.py`` starts the same processes as ``make bench`` (``bench/run.py``'s
``Stack``: gunicorn with ``BENCH_WORKERS`` workers, uvicorn, run_jobs, the reference services)
on PostgreSQL + Redis, then samples with py-spy (``--nonblocking``, 200 samples a second):

1. ``orders-cpu``: gunicorn's workers while 64 connections send market orders back to back
   (``BENCH_SECONDS``, default 15): the CPU of an order (``--gil``: only the samples of the
   thread that holds the interpreter lock);
2. ``orders-wall``: the same processes with waiting threads included (``--idle``) while
   orders are offered open-loop at 10/s: one order's wall time, waits on PostgreSQL and the
   gRPC services included;
3. ``watchers``: uvicorn while 2,000 WebSocket clients connect and subscribe (``--gil``).

For each, of the samples whose stack passes through Django's ``get_response`` (all of
uvicorn's, for the third): the share by what the innermost frame does (PostgreSQL client, gRPC
client, ORM, DRF, …), the project's functions by inclusive share and the 25 largest innermost
frames, to stdout and ``bench/results/profile.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    OPEN_LOOP_CONNECTIONS,
    PY,
    ROOT,
    Stack,
    env_float,
    raise_descriptor_limit,
    run_phase,
    settle,
)

PY_SPY = str(Path(PY).parent / "py-spy")
TOP = 25


def record(pid: int, seconds: float, out: Path, *, idle: bool) -> subprocess.Popen:
    """py-spy on ``pid`` and its children: with ``idle`` every thread, waiting or not (wall
    time); without, only the threads that hold the GIL (CPU time in Python)."""
    command = [PY_SPY, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    command += ["--rate", "200", "--duration", str(int(seconds)), "--format", "raw"]
    command += ["--output", str(out), "--idle" if idle else "--gil"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def frame_name(frame: str) -> str:
    """``function (module/file.py:line)`` → ``function (module/file.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name


# Where the innermost frame lives → what the time was spent on.
CATEGORIES = [
    ("psycopg/", "PostgreSQL client (psycopg: sending, waiting for results)"),
    ("grpc/", "gRPC client (waiting for the metering and oversight services)"),
    ("threading.py", "threads waiting (locks, events, the connection pool)"),
    ("concurrent/", "thread pools"),
    ("django/db/", "Django ORM (building SQL, converting rows)"),
    ("rest_framework/", "DRF (serializers, views, rendering)"),
    ("django/", "Django, other (middleware, request, response)"),
    ("json/", "JSON encoding and decoding"),
    ("channels_redis/", "channels-redis"),
    ("channels/", "Channels"),
    ("autobahn/", "autobahn (WebSocket protocol)"),
    ("twisted/", "Twisted"),
    ("daphne/", "daphne"),
    ("uvicorn/", "uvicorn"),
    ("websockets/", "websockets (WebSocket protocol)"),
    ("asyncio/", "asyncio event loop"),
    ("redis/", "Redis client"),
]
PROJECT = (
    "accounts/",
    "agents/",
    "api/",
    "config/",
    "grpc_clients/",
    "metering/",
    "observability/",
    "oversight/",
    "realtime/",
    "runtime/",
    "trades/",
)


def category(frame: str) -> str:
    where = frame.rpartition(" (")[2]
    if where.startswith(PROJECT):
        return "project code"
    return next((label for prefix, label in CATEGORIES if where.startswith(prefix)), "other")


def summarize(raw: Path, marker: str) -> dict:
    """Shares of the samples whose stack passes through ``marker``: by what the innermost frame
    does, the project's functions by inclusive share, the innermost frames by self share."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = 0
    # py-spy writes a frame's text as the process held it, which may not be UTF-8.
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if marker not in stack or not count.isdigit():
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        n = int(count)
        total += n
        for name in set(frames):
            if name.rpartition(" (")[2].startswith(PROJECT):
                inclusive[name] += n
        own[frames[-1]] += n
        kinds[category(frames[-1])] += n

    def top(counter: Counter, count: int = TOP) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(count)]

    return {
        "samples": total,
        "categories": top(kinds, len(kinds)),
        "project_inclusive": top(inclusive),
        "self": top(own),
    }


def main() -> int:
    raise_descriptor_limit()
    seconds = env_float("BENCH_SECONDS", 15)
    tmp = Path(tempfile.mkdtemp(prefix="trading-profile-"))
    stack = Stack(
        ROOT,
        "production",
        os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/benchdb"),
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6"),
        tmp,
    )
    profiles = {}
    try:
        stack.prepare(50, 10)
        stack.start()
        web, ws = stack.processes["web"].pid, stack.processes["ws"].pid
        runs = [
            ("orders-cpu", web, False, {"phase": "orders", "concurrency": 64}, "get_response"),
            (
                "orders-wall",
                web,
                True,
                {"phase": "orders", "rate": 10, "concurrency": OPEN_LOOP_CONNECTIONS},
                "get_response",
            ),
            (
                "watchers",
                ws,
                False,
                {
                    "phase": "watch",
                    "watchers": 2000,
                    "market_watchers": 1000,
                    "rate": 1,
                    "concurrency": 4,
                    "connect_parallel": 50,
                    "connect_timeout": 60,
                },
                "",
            ),
        ]
        for name, pid, idle, plan, marker in runs:
            raw = tmp / f"{name}.txt"
            settle(stack)
            spy = record(pid, seconds, raw, idle=idle)
            time.sleep(1.0)
            result = run_phase(stack, {"seconds": seconds, **plan}, f"profile-{name}")
            spy.wait(timeout=seconds + 60)
            profiles[name] = {
                "load": {k: result.get(k) for k in ("rps", "p50_ms", "p99_ms", "connected")},
                **summarize(raw, marker),
            }
    finally:
        stack.stop()
    lines = []
    for name, p in profiles.items():
        lines += [f"## {name}: {p['samples']} samples; load {json.dumps(p['load'])}", ""]
        lines += ["| innermost frame in | % |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in p["categories"]]
        lines += ["", "| project function (inclusive) | % | innermost frame (self) | % |"]
        lines += ["|---|---|---|---|"]
        for (fi, pi), (fs, ps) in zip(p["project_inclusive"], p["self"], strict=False):
            lines.append(f"| `{fi}` | {pi} | `{fs}` | {ps} |")
        lines.append("")
    text = "\n".join(lines)
    out = Path(os.environ.get("BENCH_RESULTS", ROOT / "bench" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
