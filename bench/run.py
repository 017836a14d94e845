"""``make bench``: the production processes under load, one table of targets.

``python bench/run.py`` (``make bench``) runs the server as production does, each process on a
port of its own and without the proxy (the load addresses them directly), on PostgreSQL +
Redis (both must listen; the database ``BENCH_DATABASE_URL`` is dropped and created fresh,
the Redis db ``BENCH_REDIS_URL`` flushed):

- gunicorn (``config/gunicorn.conf.py``, ``config.wsgi``; ``BENCH_WORKERS`` workers x
  ``BENCH_THREADS`` threads, by default production's 2 x 4: one process per core of the
  2-core machine the targets are set for) for HTTP, uvicorn (``config.asgi``) for the WebSockets,
  ``manage.py run_jobs`` for the background jobs, ``manage.py run_reference_services`` for the
  metering and oversight gRPC services; ``DJANGO_ENV=production``, a generated ``SECRET_KEY``,
  no rate limits, ``LOG_LEVEL=WARNING``.

It seeds owners, tokens and agents that auto-approve (``bench/seed.py``), counts SQL
statements and gRPC calls per order in process (``bench/inprocess.py``), then runs the load
generator (``bench/load.py``, a separate process) phase by phase, reading every server
process's own CPU time (``/proc``) around each phase:

1. ``watchers``: 10,000 WebSocket connections, each on one agent's trades, 1,000 of them on the
   market channel too, connected at most 200 handshakes at a time; then market orders offered
   open-loop at 10/s for 20 s: every fill and tick delivered, fill → watcher latency, memory
   of the WebSocket server per 1,000 connections (its RSS before and after they connected).
2. ``realistic``: 1,000 watchers (market and one agent's trades), orders offered open-loop at
   50/s over the 50 agents for 20 s, each latency counted from the order's scheduled time.
3. ``health``, ``orders``, ``reads`` (``GET …/trades?page_size=50``): the most the server takes,
   64 closed-loop connections for ``BENCH_SECONDS`` each; server CPU milliseconds per request.
4. ``overload``: orders from 256 connections: every request must be answered (201, or 429/503
   with ``Retry-After``) within 60 s; p99 of the answered ones.
5. ``orders`` again with each other count of 1 to 3 gunicorn workers (gunicorn's documented
   ``TTIN`` and ``TTOU`` signals).
6. The processes stop; ``bench/books.py`` checks that the books balance.

It writes ``bench/results/latest.json`` and ``latest.md`` (and ``<BENCH_NAME>.*``) and prints
the table: each target, the figure, ✅/❌.

``python bench/run.py --compare COMMIT`` measures an earlier commit against this tree,
alternated (old, new, old, new; ``--rounds``): the earlier tree is exported with
``git archive`` into a temporary directory and served as its README said production ran it
(``manage.py serve --workers N``, ``python -m reference_services``), with as many serving
processes as this tree's gunicorn has (``BENCH_WORKERS``), on its own database
(``BENCH_OLD_DATABASE_URL``) and Redis db (``BENCH_OLD_REDIS_URL``), with this tree's
virtualenv and load generator: saturation orders/s, reads/s and the fan-out to 1,000 watchers
at 10 orders/s offered. Written to ``bench/results/compare-<commit>.*``.

Knobs (environment): ``BENCH_SECONDS`` (saturation phases, 8), ``BENCH_WATCH_SECONDS`` (20),
``BENCH_WATCHERS`` (10000), ``BENCH_MARKET_WATCHERS`` (1000), ``BENCH_WATCH_RATE`` (10),
``BENCH_REALISTIC_WATCHERS`` (1000), ``BENCH_REALISTIC_RATE`` (50), ``BENCH_CONCURRENCY`` (64),
``BENCH_OVERLOAD_CONCURRENCY`` (256), ``BENCH_OVERLOAD_SECONDS`` (15), ``BENCH_AGENTS`` (50),
``BENCH_OWNERS`` (10), ``BENCH_WORKERS`` (2), ``BENCH_THREADS`` (4), ``BENCH_WS_WORKERS`` (2,
uvicorn's processes), ``BENCH_DATABASE_URL`` (``postgres://postgres@127.0.0.1:5432/benchdb``),
``BENCH_REDIS_URL``
(``redis://127.0.0.1:6379/6``), ``BENCH_OLD_DATABASE_URL`` (``…/bench_old``),
``BENCH_OLD_REDIS_URL`` (``…/5``), ``BENCH_RESULTS`` (output directory), ``BENCH_NAME``,
``BENCH_LABEL`` (a note stored with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.websocket_server import uvicorn_command  # noqa: E402

PY = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# gunicorn's workers, as production runs them by default (``WEB_CONCURRENCY`` in
# config/gunicorn.conf.py and compose.yaml): one process per core of the 2-core machine. The
# orders phase is run again with each other count of SCALING_WORKERS, for capacity planning.
DEFAULT_WORKERS = 2
SCALING_WORKERS = (1, 2, 3)

TARGETS = {
    "realistic_p50_ms": 10,
    "realistic_p99_ms": 50,
    "realistic_fill_p99_ms": 50,
    "watchers_connect_s": 30,
    "watchers_fill_p99_ms": 100,
    "watchers_mb_per_1000": 60,
    "queries_per_order": 12,
    "grpc_calls_per_order": 2,
}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"bench: timed out waiting for {what}")


def run_checked(args: list[str], env: dict, cwd: Path, timeout: float, what: str) -> str:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"bench: {what} failed (exit {done.returncode})")
    return done.stdout


# --- processes and their CPU time -------------------------------------------------------------


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    children = children_map() if children is None else children
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes used so far (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def database_backends(database: str) -> list[int]:
    """PostgreSQL's backends serving ``database`` (their process title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            pids.append(int(entry.name))
    return pids


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def machine_busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


# --- the server's processes -------------------------------------------------------------------


class Stack:
    """The server of one source tree: its database, reference services and serving processes.

    ``kind`` is ``production`` (gunicorn + uvicorn + run_jobs + run_reference_services) or
    ``serve`` (an earlier tree's ``manage.py serve --workers N`` and
    ``python -m reference_services``)."""

    def __init__(self, root: Path, kind: str, database_url: str, redis_url: str, tmp: Path):
        self.root, self.kind, self.tmp = root, kind, tmp
        self.database_url, self.redis_url = database_url, redis_url
        self.database = urlsplit(database_url).path.lstrip("/")
        self.workers = env_int("BENCH_WORKERS", DEFAULT_WORKERS)
        self.threads = env_int("BENCH_THREADS", 4)
        self.ws_workers = env_int("BENCH_WS_WORKERS", 2)
        self.port, self.ws_port = free_port(), free_port()
        if kind == "serve":
            self.ws_port = self.port
        metering, oversight = free_port(), free_port()
        self.grpc_ports = (metering, oversight)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "RATE_LIMIT_ENABLED": "false",  # the per-address and the per-user limits
            "LOG_LEVEL": "WARNING",
            "EMBEDDED_SERVICES": "false",
            "METERING_GRPC_ADDRESS": f"127.0.0.1:{metering}",
            "OVERSIGHT_GRPC_ADDRESS": f"127.0.0.1:{oversight}",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            # As production sizes gunicorn: the configuration derives the gRPC calls a worker
            # may wait on at once from WEB_THREADS, which the command line's --threads does not
            # change.
            "WEB_CONCURRENCY": str(self.workers),
            "WEB_THREADS": str(self.threads),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.seed: dict = {}

    @property
    def servers(self) -> str:
        """The serving processes this stack starts, as the results name them."""
        if self.kind == "serve":
            return f"manage.py serve --workers {self.workers} (its README's production server)"
        return (
            f"gunicorn {self.workers} workers x {self.threads} threads + uvicorn "
            f"{self.ws_workers} workers + run_jobs"
        )

    def spawn(self, name: str, command: list[str]) -> None:
        log = (self.tmp / f"{self.kind}-{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            command, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
        )

    def prepare(self, agents: int, owners: int) -> None:
        """A fresh database and Redis db, migrated; the reference services; the seed."""
        import psycopg
        import redis

        url = urlsplit(self.database_url)
        admin = urlunsplit(url._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.database}"')
        redis.Redis.from_url(self.redis_url).flushdb()
        run_checked([PY, "manage.py", "migrate", "--noinput"], self.env, self.root, 300, "migrate")
        metering, oversight = (f"127.0.0.1:{p}" for p in self.grpc_ports)
        if self.kind == "production":
            command = [PY, "manage.py", "run_reference_services"]
        else:
            command = [PY, "-m", "reference_services"]
        self.spawn("services", [*command, "--metering", metering, "--oversight", oversight])
        wait_until(
            lambda: all(listening("127.0.0.1", p) for p in self.grpc_ports),
            60,
            "the reference services",
        )
        seed_path = self.tmp / f"{self.kind}-seed.json"
        run_checked(
            [PY, "bench/seed.py", str(seed_path), str(agents), str(owners)],
            self.env,
            self.root,
            300,
            "seeding",
        )
        self.seed = json.loads(seed_path.read_text())
        self.seed_path = seed_path

    def start(self) -> None:
        if self.kind == "production":
            web = [PY, "-m", "gunicorn", "--config", "config/gunicorn.conf.py"]
            web += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
            web += ["--threads", str(self.threads), "config.wsgi:application"]
            self.spawn("web", web)
            ws = uvicorn_command(
                [PY, "-m", "uvicorn"], host="127.0.0.1", port=self.ws_port, workers=self.ws_workers
            )
            self.spawn("ws", ws)
            self.spawn("jobs", [PY, "manage.py", "run_jobs"])
        else:
            serve = [PY, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            self.spawn("serve", [*serve, "--workers", str(self.workers)])
        wait_until(lambda: self.answers(self.port), 90, "the HTTP server")
        wait_until(lambda: self.answers(self.ws_port), 90, "the WebSocket server")
        if self.kind == "production":
            wait_until(lambda: self.web_workers() == self.workers, 30, "gunicorn's workers")
        time.sleep(2.0)  # every worker finishes starting

    def answers(self, port: int) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise SystemExit(f"bench: {name} exited; see {self.tmp}/{self.kind}-{name}.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def web_workers(self) -> int:
        return len(children_map().get(self.processes["web"].pid, []))

    def set_web_workers(self, count: int) -> None:
        """gunicorn's documented signals: TTIN adds a worker, TTOU retires the oldest."""
        master = self.processes["web"].pid
        while (now := self.web_workers()) != count:
            os.kill(master, signal.SIGTTOU if now > count else signal.SIGTTIN)
            wait_until(lambda: self.web_workers() != now, 30, "gunicorn's workers")
        time.sleep(2.0)  # a new worker finishes starting

    def groups(self) -> dict[str, list[int]]:
        """Process ids by part (each serving process with its children), for CPU accounting."""
        children = children_map()
        parts = {name: process_tree(p.pid, children) for name, p in self.processes.items()}
        parts["postgres"] = database_backends(self.database)
        parts["redis"] = pids_named("redis-server")
        return parts

    def ws_pids(self) -> list[int]:
        name = "ws" if self.kind == "production" else "serve"
        return process_tree(self.processes[name].pid)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# Connections that carry the open-loop orders: enough that none waits for a free one at the
# offered rates, few enough that each is reused within gunicorn's keep-alive.
OPEN_LOOP_CONNECTIONS = 16


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    snapshot = {name: cpu_seconds(pids) for name, pids in stack.groups().items()}
    snapshot["machine"] = machine_busy_seconds()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    snapshot["load_generator"] = usage.ru_utime + usage.ru_stime
    return snapshot


def settle(stack: Stack, limit: float = 30.0) -> None:
    """Wait (bounded) until the server's processes are nearly idle: a phase's aftermath (ten
    thousand disconnections, the outbox) is not counted in the next."""
    deadline = time.monotonic() + limit

    def serving() -> float:
        groups = stack.groups()
        return cpu_seconds([p for n in ("web", "ws", "jobs", "serve") for p in groups.get(n, [])])

    while time.monotonic() < deadline:
        before = serving()
        time.sleep(1.0)
        if serving() - before < 0.15:
            return


def run_phase(stack: Stack, plan: dict, name: str, timeout: float = 300) -> dict:
    """One load generator run; its result with the CPU seconds each part used meanwhile."""
    settle(stack)
    full = {
        "base_url": f"http://127.0.0.1:{stack.port}",
        "ws_url": f"http://127.0.0.1:{stack.ws_port}",
        "owners": stack.seed["owners"],
        "ws_pids": stack.ws_pids(),
        "redis_url": stack.redis_url,
        "max_requests": 1_000_000,
        "drain_seconds": 10,
        **plan,
    }
    path = stack.tmp / f"plan-{name}.json"
    path.write_text(json.dumps(full))
    print(f"bench: {stack.kind}: {name}…", flush=True)
    before, started = cpu_snapshot(stack), time.monotonic()
    output = run_checked(
        [PY, str(ROOT / "bench" / "load.py"), str(path)], stack.env, ROOT, timeout, name
    )
    after, wall = cpu_snapshot(stack), time.monotonic() - started
    (stack.tmp / f"result-{name}.json").write_text(output)
    result = json.loads(output)
    cpu = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 3) for k in after}
    result["cpu_seconds"] = cpu
    result["wall_seconds"] = round(wall, 2)
    result["cores"] = {k: round(v / wall, 2) for k, v in cpu.items()}
    return result


# --- the machine ------------------------------------------------------------------------------


def machine() -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    for name, command in {
        "postgresql": ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"],
        "redis": ["redis-cli", "INFO", "server"],
    }.items():
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout
        except OSError:
            out = ""
        if name == "redis":
            out = next(
                (ln.split(":", 1)[1] for ln in out.splitlines() if ln.startswith("redis_version:")),
                "",
            )
        versions[name] = out.strip() or "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        **versions,
    }


def raise_descriptor_limit() -> int:
    """Ten thousand WebSockets need as many descriptors in the server and in the load: the
    soft limit up to the hard one, inherited by every process started from here."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def git_head(root: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()


def write_results(name: str, results: dict, table: str) -> None:
    results_dir = Path(os.environ.get("BENCH_RESULTS", ROOT / "bench" / "results"))
    results_dir.mkdir(parents=True, exist_ok=True)
    names = [name] + ([os.environ["BENCH_NAME"]] if os.environ.get("BENCH_NAME") else [])
    for n in names:
        (results_dir / f"{n}.json").write_text(json.dumps(results, indent=2) + "\n")
        (results_dir / f"{n}.md").write_text(table)


# --- make bench -------------------------------------------------------------------------------


def per_request_ms(phase: dict, parts: tuple[str, ...]) -> float | None:
    ok = phase.get("ok") or 0
    if not ok:
        return None
    return round(sum(phase["cpu_seconds"].get(p, 0.0) for p in parts) / ok * 1000, 3)


def bench() -> int:
    started = time.monotonic()
    descriptors = raise_descriptor_limit()
    host = machine()
    watchers = env_int("BENCH_WATCHERS", 10_000)
    if descriptors < watchers + 1000:
        print(f"bench: the descriptor limit ({descriptors}) is below {watchers} WebSockets")
    settings = {
        "seconds": env_float("BENCH_SECONDS", 8),
        "watch_seconds": env_float("BENCH_WATCH_SECONDS", 20),
        "watchers": watchers,
        "market_watchers": env_int("BENCH_MARKET_WATCHERS", 1000),
        "watch_rate": env_float("BENCH_WATCH_RATE", 10),
        "realistic_watchers": env_int("BENCH_REALISTIC_WATCHERS", 1000),
        "realistic_rate": env_float("BENCH_REALISTIC_RATE", 50),
        "concurrency": env_int("BENCH_CONCURRENCY", 64),
        "overload_concurrency": env_int("BENCH_OVERLOAD_CONCURRENCY", 256),
        "overload_seconds": env_float("BENCH_OVERLOAD_SECONDS", 15),
        "agents": env_int("BENCH_AGENTS", 50),
        "owners": env_int("BENCH_OWNERS", 10),
        "descriptor_limit": descriptors,
    }
    database_url = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/benchdb"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    require_backends(database_url, redis_url)
    tmp = Path(tempfile.mkdtemp(prefix="trading-bench-"))
    stack = Stack(ROOT, "production", database_url, redis_url, tmp)
    settings["servers"] = f"{stack.servers} + run_reference_services"
    phases: dict[str, dict] = {}
    try:
        stack.prepare(settings["agents"], settings["owners"])
        print(f"bench: seeded {settings['agents']} agents", flush=True)
        inprocess = json.loads(
            run_checked(
                [PY, "bench/inprocess.py", str(stack.seed_path)], stack.env, ROOT, 120, "counts"
            )
        )
        stack.start()
        print(f"bench: {settings['servers']} up", flush=True)
        c = settings["concurrency"]
        phases["watchers"] = run_phase(
            stack,
            {
                "phase": "watch",
                "watchers": watchers,
                "market_watchers": settings["market_watchers"],
                "rate": settings["watch_rate"],
                "seconds": settings["watch_seconds"],
                "concurrency": OPEN_LOOP_CONNECTIONS,
                "connect_parallel": env_int("BENCH_CONNECT_PARALLEL", 50),
                "connect_timeout": 60,
            },
            "watchers",
        )
        phases["realistic"] = run_phase(
            stack,
            {
                "phase": "watch",
                "watchers": settings["realistic_watchers"],
                "market_watchers": settings["realistic_watchers"],
                "rate": settings["realistic_rate"],
                "seconds": settings["watch_seconds"],
                "concurrency": OPEN_LOOP_CONNECTIONS,
            },
            "realistic",
        )
        for name in ("health", "orders", "reads"):
            phases[name] = run_phase(
                stack, {"phase": name, "seconds": settings["seconds"], "concurrency": c}, name
            )
        phases["overload"] = run_phase(
            stack,
            {
                "phase": "overload",
                "seconds": settings["overload_seconds"],
                "concurrency": settings["overload_concurrency"],
                "timeout": 60,
            },
            "overload",
        )
        scaling = {stack.workers: phases["orders"]}
        for workers in sorted(set(SCALING_WORKERS) - {stack.workers}, reverse=True):
            stack.set_web_workers(workers)
            scaling[workers] = run_phase(
                stack,
                {"phase": "orders", "seconds": settings["seconds"], "concurrency": c},
                f"orders-{workers}-workers",
            )
    finally:
        stack.stop()
    books = json.loads(run_checked([PY, "bench/books.py"], stack.env, ROOT, 120, "the books"))
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": os.environ.get("BENCH_LABEL", ""),
        "git": git_head(ROOT),
        "machine": host,
        "backend": "postgresql+redis",
        "settings": settings,
        "inprocess": {k: v for k, v in inprocess.items() if k != "sql_of_one_order"},
        "sql_of_one_order": inprocess["sql_of_one_order"],
        "phases": phases,
        "scaling": {
            str(k): {"rps": v.get("rps"), "p99_ms": v.get("p99_ms"), "errors": v.get("errors")}
            for k, v in scaling.items()
        },
        "books": books,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    table = markdown(results)
    write_results("latest", results, table)
    shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    return 0


def require_backends(*urls: str) -> None:
    for url in urls:
        parts = urlsplit(url)
        default = 5432 if parts.scheme.startswith("postgres") else 6379
        if not listening(parts.hostname or "127.0.0.1", parts.port or default):
            raise SystemExit(
                f"bench: nothing listens at {parts.hostname}:{parts.port or default}; the "
                "benchmark runs the production processes on PostgreSQL + Redis "
                "(BENCH_DATABASE_URL, BENCH_REDIS_URL)"
            )


def mark(ok: bool | None) -> str:
    return "" if ok is None else ("✅" if ok else "❌")


def markdown(r: dict) -> str:
    t, p, m = TARGETS, r["phases"], r["machine"]
    w, real = p["watchers"], p["realistic"]
    health, over = p["health"], p["overload"]
    ro, wo = real["orders"], w["orders"]

    def le(value, target):
        return value is not None and value <= target

    all_server = ("web", "ws", "jobs", "services", "postgres", "redis")
    rows = [
        (
            f"order latency, {real['offered_rate']:g}/s offered open-loop, "
            f"{real['connected']} watchers",
            f"p50 {ro['p50_ms']} / p99 {ro['p99_ms']} / max {ro['max_ms']} ms; "
            f"{ro['ok']} orders, {ro['errors']} errors",
            f"p50 ≤ {t['realistic_p50_ms']}, p99 ≤ {t['realistic_p99_ms']} ms, 0 errors",
            mark(
                le(ro["p50_ms"], t["realistic_p50_ms"])
                and le(ro["p99_ms"], t["realistic_p99_ms"])
                and ro["errors"] == 0
            ),
        ),
        (
            "fill → watcher, same phase",
            f"p50 {real['fill_latency_p50_ms']} / p99 {real['fill_latency_p99_ms']} ms; "
            f"{real['fills_delivered']}/{real['fills_expected']} delivered "
            f"({real['fills_delivered_pct']} %)",
            f"p99 ≤ {t['realistic_fill_p99_ms']} ms, 100 %",
            mark(
                le(real["fill_latency_p99_ms"], t["realistic_fill_p99_ms"])
                and real["fills_delivered_pct"] == 100.0
            ),
        ),
        (
            f"{w['watchers']:,} WebSocket connections ({w['market_watchers']:,} on the market)",
            f"{w['connected']:,} connected in {w['connect_seconds']} s, {w['kept']:,} kept "
            f"to the end",
            f"all within {t['watchers_connect_s']} s, all kept",
            mark(
                w["connected"] == w["watchers"]
                and le(w["connect_seconds"], t["watchers_connect_s"])
                and w["kept"] == w["watchers"]
            ),
        ),
        (
            f"… at {w['offered_rate']:g} orders/s offered: fills and ticks",
            f"fills {w['fills_delivered']:,}/{w['fills_expected']:,} "
            f"({w['fills_delivered_pct']} %), ticks {w['ticks_delivered']:,}/"
            f"{w['ticks_expected']:,} ({w['ticks_delivered_pct']} %); fill → watcher p50 "
            f"{w['fill_latency_p50_ms']} / p99 {w['fill_latency_p99_ms']} ms; orders p99 "
            f"{wo['p99_ms']} ms, {wo['errors']} errors",
            f"100 %, p99 ≤ {t['watchers_fill_p99_ms']} ms",
            mark(
                w["fills_delivered_pct"] == 100.0
                and w["ticks_delivered_pct"] == 100.0
                and le(w["fill_latency_p99_ms"], t["watchers_fill_p99_ms"])
            ),
        ),
        (
            "… WebSocket server memory per 1,000 connections",
            f"{w['ws_rss_mb_per_1000']} MB (uvicorn RSS {w['ws_rss_mb']['before']} → "
            f"{w['ws_rss_mb']['connected']} MB; Redis {w['redis_used_mb']['before']} → "
            f"{w['redis_used_mb']['connected']} MB)",
            f"≤ {t['watchers_mb_per_1000']} MB",
            mark(le(w["ws_rss_mb_per_1000"], t["watchers_mb_per_1000"])),
        ),
        (
            f"overload: orders from {r['settings']['overload_concurrency']} connections",
            f"{over['requests']} requests: {over['ok']} 201, {over['refused']} 429/503 with "
            f"Retry-After, {over['errors']} unanswered or other ({over['statuses']}); "
            f"answered orders p50 {over['p50_ms']} / p99 {over['p99_ms']} ms, "
            f"{over['rps']}/s",
            "every request answered",
            mark(over["errors"] == 0 and over["requests"] > 0),
        ),
        (
            "books after the run",
            f"{'balanced' if r['books']['balanced'] else 'NOT balanced'}: "
            f"{r['books']['agents']} agents, {r['books']['orders']} orders, "
            f"{r['books']['fills']} fills"
            + (f"; {r['books']['problems']}" if r["books"]["problems"] else ""),
            "balanced",
            mark(r["books"]["balanced"]),
        ),
    ]
    for name, label in (
        ("health", "`GET /health/live`"),
        ("orders", "market orders"),
        ("reads", "reads `GET …/trades?page_size=50`"),
    ):
        phase = p[name]
        ratio = ""
        if name != "health" and health.get("rps"):
            ratio = f"; {phase['rps'] / health['rps']:.3f} of /health/live"
        rows.append(
            (
                f"saturation: {label}, {r['settings']['concurrency']} connections",
                f"{phase['rps']}/s, p99 {phase['p99_ms']} ms, {phase['errors']} errors{ratio}; "
                f"server CPU per request {per_request_ms(phase, ('web',))} ms in gunicorn, "
                f"{per_request_ms(phase, all_server)} ms with uvicorn, jobs, gRPC services, "
                f"PostgreSQL and Redis",
                "≥ the commit before (`--compare`)",
                "",
            )
        )
    rows.append(
        (
            "orders/s by gunicorn workers",
            ", ".join(
                f"{k} → {v['rps']}/s (p99 {v['p99_ms']} ms)"
                for k, v in sorted(r["scaling"].items())
            ),
            "—",
            "",
        )
    )
    inproc = r["inprocess"]
    rows += [
        (
            "SQL statements per order (whole request, in process)",
            f"{inproc['queries_per_order']} (+ {inproc.get('transaction_control_per_order', 0)} "
            "BEGIN/COMMIT)",
            f"≤ {t['queries_per_order']}",
            mark(le(inproc["queries_per_order"], t["queries_per_order"])),
        ),
        (
            "synchronous gRPC calls per order",
            f"{inproc['grpc_calls_per_order']} ({', '.join(sorted(inproc['grpc_methods']))})",
            f"≤ {t['grpc_calls_per_order']}",
            mark(le(inproc["grpc_calls_per_order"], t["grpc_calls_per_order"])),
        ),
    ]
    lines = [
        f"Benchmark {r['when']} (git {r['git']}{', ' + r['label'] if r['label'] else ''}): "
        f"{m['nproc']} x {m['cpu']}, {m['memory_gb']} GB, Python {m['python']}, PostgreSQL "
        f"{m['postgresql']}, Redis {m['redis']}; {r['settings']['servers']}; load average "
        f"{m['load_average_1m']} before; wall time {r['wall_seconds']} s.",
        "",
        "| target | figure | wanted | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    cores = "; ".join(
        f"{name} " + ", ".join(f"{k} {v}" for k, v in phase["cores"].items() if v >= 0.01)
        for name, phase in p.items()
    )
    lines += ["", f"Cores used by part, per phase: {cores}."]
    return "\n".join(lines) + "\n"


# --- --compare --------------------------------------------------------------------------------


def compare(commit: str, rounds: int) -> int:
    """Alternate the earlier commit and this tree: saturation orders and reads, and the
    fan-out to 1,000 watchers at 10 orders/s offered."""
    started = time.monotonic()
    raise_descriptor_limit()
    host = machine()
    new_db = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/benchdb")
    new_redis = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    old_db = os.environ.get(
        "BENCH_OLD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_old"
    )
    old_redis = os.environ.get("BENCH_OLD_REDIS_URL", "redis://127.0.0.1:6379/5")
    require_backends(new_db, new_redis, old_db, old_redis)
    full = subprocess.run(
        ["git", "rev-parse", commit], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="trading-bench-compare-"))
    old_root = tmp / "old"
    old_root.mkdir()
    archive = subprocess.run(["git", "archive", full], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive.stdout, check=True)
    seconds = env_float("BENCH_SECONDS", 10)
    c = env_int("BENCH_CONCURRENCY", 64)
    watch = {
        "phase": "watch",
        "watchers": env_int("BENCH_REALISTIC_WATCHERS", 1000),
        "market_watchers": env_int("BENCH_REALISTIC_WATCHERS", 1000),
        "rate": env_float("BENCH_WATCH_RATE", 10),
        "seconds": env_float("BENCH_WATCH_SECONDS", 20),
        "concurrency": OPEN_LOOP_CONNECTIONS,
    }
    servers: dict[str, str] = {}
    runs: list[dict] = []
    for n in range(1, rounds + 1):
        for side in ("old", "new"):
            if side == "old":
                stack = Stack(old_root, "serve", old_db, old_redis, tmp)
            else:
                stack = Stack(ROOT, "production", new_db, new_redis, tmp)
            servers[side] = stack.servers
            try:
                stack.prepare(env_int("BENCH_AGENTS", 50), env_int("BENCH_OWNERS", 10))
                stack.start()
                run = {"side": side, "round": n, "load_average_1m": round(os.getloadavg()[0], 2)}
                for name in ("health", "orders", "reads"):
                    run[name] = run_phase(
                        stack,
                        {"phase": name, "seconds": seconds, "concurrency": c},
                        f"{side}-{name}",
                    )
                run["fanout"] = run_phase(stack, watch, f"{side}-fanout")
            finally:
                stack.stop()
            runs.append(run)
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "old": full[:7],
        "new": git_head(ROOT),
        "machine": host,
        "old_servers": servers["old"],
        "new_servers": servers["new"],
        "runs": runs,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    table = compare_markdown(results)
    write_results(f"compare-{full[:7]}", results, table)
    shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    return 0


def compare_markdown(r: dict) -> str:
    def figures(side: str, get) -> list:
        return [get(run) for run in r["runs"] if run["side"] == side]

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    def fmt(values: list) -> str:
        return " / ".join(str(v) for v in values)

    measures = [
        ("`GET /health/live` req/s", lambda x: x["health"]["rps"], None),
        ("market orders/s (64 connections)", lambda x: x["orders"]["rps"], 0.85),
        ("reads (50 trades)/s", lambda x: x["reads"]["rps"], 1.0),
        (
            "fan-out at 10 orders/s: fill → watcher p99 ms",
            lambda x: x["fanout"]["fill_latency_p99_ms"],
            None,
        ),
        (
            "fan-out at 10 orders/s: fills delivered %",
            lambda x: x["fanout"]["fills_delivered_pct"],
            None,
        ),
    ]
    lines = [
        f"Comparison {r['when']}: {r['old']} ({r['old_servers']}) against {r['new']} "
        f"({r['new_servers']}), alternated ({', '.join(x['side'] for x in r['runs'])}); "
        f"{r['machine']['nproc']} x "
        f"{r['machine']['cpu']}; load average before each run: "
        + ", ".join(f"{x['side']} {x['load_average_1m']}" for x in r["runs"])
        + f"; wall time {r['wall_seconds']} s.",
        "",
        f"| measure | {r['old']} (old) | {r['new']} (new) | new / old | wanted | |",
        "|---|---|---|---|---|---|",
    ]
    for label, get, floor in measures:
        old, new = figures("old", get), figures("new", get)
        ratio = None
        if mean(old) and mean(new) is not None:
            ratio = round(mean(new) / mean(old), 3)
        wanted, ok = "—", None
        if floor is not None:
            wanted = f"≥ {floor:g} of old"
            ok = ratio is not None and ratio >= floor
        elif "p99" in label:
            wanted, ok = "new ≤ 100 ms", all(v is not None and v <= 100 for v in new)
        elif "%" in label:
            wanted, ok = "new 100 %", all(v == 100.0 for v in new)
        lines.append(f"| {label} | {fmt(old)} | {fmt(new)} | {ratio} | {wanted} | {mark(ok)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", metavar="COMMIT", help="alternate COMMIT and this tree")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --compare (2)")
    args = parser.parse_args()
    if args.compare:
        return compare(args.compare, args.rounds)
    return bench()


if __name__ == "__main__":
    sys.exit(main())
