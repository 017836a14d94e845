"""``make bench``: start the server's processes as in production, load them from another
process, report.

What one run does, in order (every step bounded in time):

1. Picks the backend: PostgreSQL + Redis when both listen on 127.0.0.1 (a dedicated database
   ``bench``, dropped and created fresh, and Redis db 6, flushed), else the embedded default,
   SQLite in a temporary file with the in-memory channel layer. It prints which.
2. Migrates that database, starts the reference gRPC services in their own process
   (``python -m reference_services``), seeds owners, tokens and agents that auto-approve
   (``bench/seed.py``), and measures SQL queries and gRPC calls per order in process
   (``bench/inprocess.py``).
3. Starts the server in production mode (``DJANGO_ENV=production``, a generated
   ``SECRET_KEY``, no rate limits, ``LOG_LEVEL=WARNING``, external gRPC services). On
   PostgreSQL + Redis: the production processes, each on a port of its own and without the
   proxy (the load addresses them directly): gunicorn (``config.wsgi``, ``BENCH_WORKERS``
   workers x ``BENCH_THREADS`` threads) for HTTP, daphne (``config.asgi``) for the WebSockets,
   ``manage.py run_jobs`` for the background jobs. On SQLite, which one process owns, with the
   in-memory channel layer, which does not cross processes: ``manage.py serve`` (``make run``).
4. Runs the load generator (``bench/load.py``) as a separate process: baseline, trades,
   reads, WebSocket fan-out, gRPC overhead from ``/metrics``. Meanwhile it samples the RSS of
   every server process and the load average.
5. Stops everything, writes ``bench/results/latest.json`` and ``latest.md`` and prints the
   table with the ratios trade-path/baseline and reads/baseline.

Knobs (environment): ``BENCH_SECONDS`` (each HTTP phase, default 8), ``BENCH_FANOUT_SECONDS``
(the fan-out under the full trade load, default 8), ``BENCH_FANOUT_PACED_SECONDS`` (the
fan-out's first stage, default 20: with the defaults a fill reaches 20 clients, so its p99 is about
the two slowest fills of 200), ``BENCH_FANOUT_RATE`` (orders per second offered in that stage,
default 10; 0 skips it), ``BENCH_CONCURRENCY`` (64),
``BENCH_AGENTS`` (50), ``BENCH_OWNERS`` (10),
``BENCH_WS_CLIENTS`` (1000), ``BENCH_MAX_REQUESTS`` (per phase, 100000),
``BENCH_BACKEND`` (``auto``, ``sqlite``, ``postgres``), ``BENCH_DATABASE_URL`` (PostgreSQL
server URL whose ``bench`` database is recreated; default ``postgres://postgres@127.0.0.1:5432/bench``),
``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/6``), ``BENCH_WORKERS`` (gunicorn's
workers, default 3), ``BENCH_THREADS`` (threads per worker, default 4), ``BENCH_RESULTS``
(output directory), ``BENCH_LABEL`` (a note stored with the results),
``BENCH_NAME`` (also write ``<name>.json`` and ``<name>.md`` next to ``latest``).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

TARGETS = {
    "trades_rps": 300,
    "trades_p99_ms": 50,
    "trades_ratio": 0.25,
    "reads_rps": 800,
    "reads_p99_ms": 30,
    "fanout_p99_ms": 100,
    "queries_per_order": 12,
    "grpc_calls_per_order": 2,
    "rss_mb": 300,
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


# --- backend ----------------------------------------------------------------------------------


def choose_backend(tmp: Path) -> dict:
    """The database and channel layer of this run, prepared fresh."""
    wanted = os.environ.get("BENCH_BACKEND", "auto")
    pg_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    pg, rd = urlsplit(pg_url), urlsplit(redis_url)
    available = listening(pg.hostname, pg.port or 5432) and listening(rd.hostname, rd.port or 6379)
    if wanted == "postgres" or (wanted == "auto" and available):
        import psycopg
        import redis

        name = pg.path.lstrip("/")
        admin = urlunsplit(pg._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        redis.Redis.from_url(redis_url).flushdb()
        return {
            "name": "postgresql+redis",
            "env": {"DATABASE_URL": pg_url, "REDIS_URL": redis_url},
        }
    path = tmp / "bench.sqlite3"
    return {
        "name": "sqlite (embedded default, in-memory channel layer)",
        "env": {"DATABASE_URL": f"sqlite:///{path}", "REDIS_URL": ""},
    }


# Orders per second offered while the WebSocket clients watch, in the fan-out's first stage:
# a load the 2-core machine carries beside 1,000 clients without saturating (it took 23-41
# orders/s at most meanwhile), so that the latency is the fan-out's, not the run queue's.
DEFAULT_FANOUT_RATE = 10.0


# gunicorn's workers and threads when BENCH_WORKERS / BENCH_THREADS are unset.
DEFAULT_WORKERS = 3
DEFAULT_THREADS = 4


def server_commands(backend: dict, env: dict) -> tuple[dict[str, list[str]], str, int]:
    """The server's processes of this run (name → command), their description, and the
    processes that answer ``/metrics`` at the HTTP address."""
    if not backend["env"].get("REDIS_URL"):
        command = [PY, "manage.py", "serve", "--host", "127.0.0.1", "--port", env["PORT"]]
        return {"serve": command}, "manage.py serve (one process)", 1
    workers = env_int("BENCH_WORKERS", DEFAULT_WORKERS)
    threads = env_int("BENCH_THREADS", DEFAULT_THREADS)
    web = [PY, "-m", "gunicorn", "--config", "config/gunicorn.conf.py"]
    web += ["--bind", f"127.0.0.1:{env['PORT']}", "--workers", str(workers)]
    web += ["--threads", str(threads), "config.wsgi:application"]
    ws = [PY, "-m", "daphne", "--bind", "127.0.0.1", "--port", env["WS_PORT"]]
    ws += ["config.asgi:application"]
    jobs = [PY, "manage.py", "run_jobs"]
    described = f"gunicorn {workers} workers x {threads} threads + daphne + run_jobs"
    return {"web": web, "ws": ws, "jobs": jobs}, described, workers


# --- process sampling -------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc, no psutil needed)."""
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
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int], *, main_threads: bool = False) -> float:
    """User + system CPU time the processes used so far; ``main_threads``: only their main
    threads (a serving process's event loop: daphne, the WebSockets, the live events)."""
    total = 0
    for pid in pids:
        path = f"/proc/{pid}/task/{pid}/stat" if main_threads else f"/proc/{pid}/stat"
        try:
            fields = Path(path).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time every core of the machine spent busy so far (all processes)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class Sampler(threading.Thread):
    """Every half second: the server processes' RSS, the load average, and the CPU time used
    by the server processes, the reference services and the whole machine."""

    def __init__(self, roots: list[int], services: int):
        super().__init__(daemon=True)
        self.roots = roots
        self.services = services
        self.max_rss: dict[int, float] = {}
        self.max_total = 0.0
        self.loads: list[float] = []
        # (wall time, server CPU s, reference services CPU s, machine busy s, server event
        # loops CPU s)
        self.cpu: list[tuple[float, float, float, float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            total = 0.0
            tree = [pid for root in self.roots for pid in process_tree(root)]
            for pid in tree:
                rss = rss_mb(pid)
                if rss is None:
                    continue
                total += rss
                self.max_rss[pid] = max(self.max_rss.get(pid, 0.0), rss)
            self.max_total = max(self.max_total, total)
            self.loads.append(os.getloadavg()[0])
            self.cpu.append(
                (
                    time.time(),
                    cpu_seconds(tree),
                    cpu_seconds(process_tree(self.services)),
                    machine_busy_seconds(),
                    cpu_seconds(tree, main_threads=True),
                )
            )

    def cores_during(self, start: float, end: float, load_cpu_seconds: float) -> dict | None:
        """Cores used on average between ``start`` and ``end`` (wall time), by part."""
        inside = [s for s in self.cpu if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (t0, server0, services0, busy0, loops0) = inside[0]
        (t1, server1, services1, busy1, loops1) = inside[-1]
        seconds = t1 - t0
        server, services = (server1 - server0) / seconds, (services1 - services0) / seconds
        load = load_cpu_seconds / (end - start)
        busy = (busy1 - busy0) / seconds
        return {
            "server": round(server, 2),
            "server_event_loops": round((loops1 - loops0) / seconds, 2),
            "reference_services": round(services, 2),
            "load_generator": round(load, 2),
            "other": round(max(busy - server - services - load, 0.0), 2),
            "machine": round(busy, 2),
        }


# --- the run ----------------------------------------------------------------------------------


def calibrate(seconds: float = 1.0) -> float:
    """Millions of iterations per second of a fixed pure-Python loop, on one core.

    The machine's speed drifts (a shared virtual machine): the same commit measured half the
    requests/s an hour apart, with this figure halved too. Compare runs with it in mind."""
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10_000):
            count += 1
    return round(count / seconds / 1e6, 2)


def machine() -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "calibration_mloops_per_s": calibrate(),
    }


def run_checked(args: list[str], env: dict, timeout: float, what: str) -> str:
    done = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"bench: {what} failed (exit {done.returncode})")
    return done.stdout


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    started = time.monotonic()
    settings = {
        "seconds": env_float("BENCH_SECONDS", 8),
        "fanout_seconds": env_float("BENCH_FANOUT_SECONDS", 8),
        "fanout_paced_seconds": env_float("BENCH_FANOUT_PACED_SECONDS", 20),
        "fanout_rate": env_float("BENCH_FANOUT_RATE", DEFAULT_FANOUT_RATE),
        "concurrency": env_int("BENCH_CONCURRENCY", 64),
        "agents": env_int("BENCH_AGENTS", 50),
        "owners": env_int("BENCH_OWNERS", 10),
        "ws_clients": env_int("BENCH_WS_CLIENTS", 1000),
        "max_requests": env_int("BENCH_MAX_REQUESTS", 100_000),
    }
    results_dir = Path(os.environ.get("BENCH_RESULTS", ROOT / "bench" / "results"))
    host = machine()  # before anything starts: the calibration loop has the machine to itself
    tmp = Path(tempfile.mkdtemp(prefix="trading-bench-"))
    backend = choose_backend(tmp)
    print(f"bench: backend {backend['name']}", flush=True)
    port, ws_port, metering_port, oversight_port = (free_port() for _ in range(4))
    env = {
        **os.environ,
        **backend["env"],
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "RATE_LIMIT_ENABLED": "false",  # the per-IP and the per-user order limits
        "LOG_LEVEL": "WARNING",
        "EMBEDDED_SERVICES": "false",
        "METERING_GRPC_ADDRESS": f"127.0.0.1:{metering_port}",
        "OVERSIGHT_GRPC_ADDRESS": f"127.0.0.1:{oversight_port}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WS_PORT": str(ws_port),
    }
    if not env["REDIS_URL"]:
        del env["REDIS_URL"]

    processes: list[subprocess.Popen] = []
    try:
        run_checked([PY, "manage.py", "migrate", "--noinput"], env, 300, "migrate")
        services = subprocess.Popen(
            [
                PY,
                "-m",
                "reference_services",
                "--metering",
                env["METERING_GRPC_ADDRESS"],
                "--oversight",
                env["OVERSIGHT_GRPC_ADDRESS"],
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(services)
        wait_until(
            lambda: all(listening("127.0.0.1", p) for p in (metering_port, oversight_port)),
            30,
            "the reference services",
        )
        seed_path = tmp / "seed.json"
        run_checked(
            [
                PY,
                "bench/seed.py",
                str(seed_path),
                str(settings["agents"]),
                str(settings["owners"]),
            ],
            env,
            300,
            "seeding",
        )
        print(f"bench: seeded {settings['agents']} agents", flush=True)
        inprocess = json.loads(
            run_checked([PY, "bench/inprocess.py", str(seed_path)], env, 120, "in-process counts")
        )

        commands, settings["servers"], http_processes = server_commands(backend, env)
        servers = {}
        for name, command in commands.items():
            log = (tmp / f"{name}.log").open("w")
            servers[name] = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
            processes.append(servers[name])

        def answers(port: int) -> bool:
            for name, server in servers.items():
                if server.poll() is not None:
                    raise SystemExit(f"bench: {name} exited; see {tmp / (name + '.log')}")
            try:
                url = f"http://127.0.0.1:{port}/health/live"
                with urllib.request.urlopen(url, timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(lambda: answers(port), 60, "the HTTP server")
        if "ws" in servers:
            wait_until(lambda: answers(ws_port), 60, "the WebSocket server")
        time.sleep(1.0)  # every worker of a multi-process server finishes starting
        print(f"bench: server up on 127.0.0.1:{port} ({settings['servers']})")

        seed = json.loads(seed_path.read_text())
        plan = {
            **settings,
            "base_url": f"http://127.0.0.1:{port}",
            "ws_url": f"http://127.0.0.1:{ws_port if 'ws' in servers else port}",
            "owners": seed["owners"],
            "phases": ["baseline", "trades", "reads", "fanout"],
            "drain_seconds": 10,
            "scrape_attempts": 12,
            "processes": http_processes,
        }
        plan_path = tmp / "plan.json"
        plan_path.write_text(json.dumps(plan))
        sampler = Sampler([server.pid for server in servers.values()], services.pid)
        sampler.start()
        load_started = time.monotonic()
        print("bench: running the load (baseline, trades, reads, fan-out)…", flush=True)
        load = json.loads(
            run_checked([PY, "bench/load.py", str(plan_path)], env, 480, "the load generator")
        )
        load_seconds = time.monotonic() - load_started
        sampler.stopped.set()
        sampler.join()
    finally:
        for process in reversed(processes):
            stop(process)

    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": os.environ.get("BENCH_LABEL", ""),
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "machine": host,
        "backend": backend["name"],
        "settings": settings,
        "server": {
            "rss_mb_max_per_process": round(max(sampler.max_rss.values(), default=0), 1),
            "rss_mb_max_total": round(sampler.max_total, 1),
            "processes": len(sampler.max_rss),
        },
        "load_average": {
            "before": round(sampler.loads[0], 2) if sampler.loads else None,
            "max": round(max(sampler.loads), 2) if sampler.loads else None,
        },
        "load_seconds": round(load_seconds, 1),
        "cores": {
            name: sampler.cores_during(t["start"], t["end"], t["load_cpu_seconds"])
            for name, t in load.get("phase_times", {}).items()
        },
        "inprocess": {k: v for k, v in inprocess.items() if k != "sql_of_one_order"},
        "sql_of_one_order": inprocess["sql_of_one_order"],
        **load,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    names = ["latest"]
    if os.environ.get("BENCH_NAME"):
        names.append(os.environ["BENCH_NAME"])
    for name in names:
        (results_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        (results_dir / f"{name}.md").write_text(table)
    print(table)
    return 0


# --- the table --------------------------------------------------------------------------------


def fanout_rows(t: dict, fan: dict) -> list[tuple[str, str, str, str]]:
    """The table's rows of the fan-out: its paced stage, if it ran, then the full load."""
    clients = f"{fan.get('connected')}/{fan.get('clients')} WebSocket clients"
    stages = [(fan, "")]
    if "paced" in fan:
        paced = fan["paced"]
        stages = [
            (paced, f", at {paced.get('offered_rate')} orders/s offered"),
            (fan, ", under the full trade load"),
        ]
    rows = []
    for stage, how in stages:
        trades = stage.get("trades", {})
        p99, pct = stage.get("latency_p99_ms"), stage.get("delivered_pct")
        met = None if p99 is None else p99 <= t["fanout_p99_ms"] and pct == 100.0
        rows.append(
            (
                f"fan-out to {clients}{how}",
                f"commit→receipt p50 {stage.get('latency_p50_ms')} / p99 {p99} ms; delivered "
                f"{stage.get('events_delivered')}/{stage.get('events_expected')} ({pct} %); "
                f"trades meanwhile {trades.get('rps')}/s, p99 {trades.get('p99_ms')} ms, "
                f"{trades.get('errors')} errors; the load generator's own loop lag p50 "
                f"{stage.get('generator_loop_lag_p50_ms')} / p99 "
                f"{stage.get('generator_loop_lag_p99_ms')} ms",
                f"p99 ≤ {t['fanout_p99_ms']} ms, 100 %",
                "" if met is None else ("✅" if met else "❌"),
            )
        )
    return rows


def markdown(r: dict) -> str:
    base, trades, reads = r.get("baseline", {}), r.get("trades", {}), r.get("reads", {})
    fan, grpc, inproc = r.get("fanout", {}), r.get("grpc", {}), r["inprocess"]
    ratio = lambda a, b: round(a / b, 3) if a and b else None  # noqa: E731
    trade_ratio = ratio(trades.get("rps"), base.get("rps"))
    read_ratio = ratio(reads.get("rps"), base.get("rps"))

    def check(ok) -> str:
        return "" if ok is None else ("✅" if ok else "❌")

    def le(value, target):
        return None if value is None else value <= target

    def ge(value, target):
        return None if value is None else value >= target

    t = TARGETS
    rows = [
        (
            "baseline `GET /health/live`",
            f"{base.get('rps')} req/s, p99 {base.get('p99_ms')} ms",
            "—",
            "",
        ),
        (
            "trade path (auto-approved market orders)",
            f"{trades.get('rps')} trades/s; p50 {trades.get('p50_ms')} / p99 "
            f"{trades.get('p99_ms')} / p99.9 {trades.get('p999_ms')} ms; "
            f"{trades.get('errors')} errors of {trades.get('requests')}",
            f"≥ {t['trades_rps']}/s, p99 ≤ {t['trades_p99_ms']} ms, 0 errors",
            check(
                ge(trades.get("rps"), t["trades_rps"])
                and le(trades.get("p99_ms"), t["trades_p99_ms"])
                and trades.get("errors") == 0
            ),
        ),
        (
            "trade path / baseline",
            f"{trade_ratio}",
            f"≥ {t['trades_ratio']}",
            check(ge(trade_ratio, t["trades_ratio"])),
        ),
        (
            "reads `GET …/trades?page_size=50`",
            f"{reads.get('rps')} req/s, p99 {reads.get('p99_ms')} ms, {reads.get('errors')} errors",
            f"≥ {t['reads_rps']}/s, p99 ≤ {t['reads_p99_ms']} ms",
            check(
                ge(reads.get("rps"), t["reads_rps"]) and le(reads.get("p99_ms"), t["reads_p99_ms"])
            ),
        ),
        ("reads / baseline", f"{read_ratio}", "—", ""),
        *fanout_rows(t, fan),
        (
            "gRPC per trade (client side, from /metrics)",
            f"{grpc.get('calls_per_trade')} calls, {grpc.get('ms_per_trade')} ms "
            f"(processes scraped before/after: {grpc.get('processes_seen')}): "
            + ", ".join(
                f"{k} {v['calls_per_trade']}x {v['mean_ms']} ms"
                for k, v in sorted(grpc.get("per_method", {}).items())
            ),
            "—",
            "",
        ),
        (
            "cores used (server, of which its event loops / reference services / load "
            "generator / other)",
            "; ".join(
                f"{phase} {c['server']}, {c.get('server_event_loops', '?')} / "
                f"{c['reference_services']} / {c['load_generator']} / {c['other']}"
                for phase, c in r.get("cores", {}).items()
                if c
            ),
            f"of {r['machine']['nproc']}",
            "",
        ),
        (
            "SQL queries per order (whole request, in process)",
            f"{inproc['queries_per_order']} (+ {inproc.get('transaction_control_per_order', 0)} "
            "transaction control: BEGIN, COMMIT)",
            f"≤ {t['queries_per_order']}",
            check(le(inproc["queries_per_order"], t["queries_per_order"])),
        ),
        (
            "synchronous gRPC calls per order",
            f"{inproc['grpc_calls_per_order']} ({', '.join(sorted(inproc['grpc_methods']))})",
            f"≤ {t['grpc_calls_per_order']}",
            check(le(inproc["grpc_calls_per_order"], t["grpc_calls_per_order"])),
        ),
        (
            "server RSS under load",
            f"max {r['server']['rss_mb_max_per_process']} MB per process, "
            f"{r['server']['rss_mb_max_total']} MB total ({r['server']['processes']} processes)",
            f"≤ {t['rss_mb']} MB per process",
            check(le(r["server"]["rss_mb_max_per_process"], t["rss_mb"])),
        ),
    ]
    m = r["machine"]
    lines = [
        f"Benchmark {r['when']} (git {r['git']}{', ' + r['label'] if r['label'] else ''}): "
        f"{m['nproc']} x {m['cpu']}, {m['memory_gb']} GB, Python {m['python']} "
        f"(speed {m.get('calibration_mloops_per_s')} M loops/s); "
        f"backend {r['backend']}; {r['settings']['servers']}; "
        f"{r['settings']['concurrency']} connections, {r['settings']['seconds']} s per phase; "
        f"load average {r['load_average']['before']} before, max {r['load_average']['max']}; "
        f"wall time {r['wall_seconds']} s.",
        "",
        "| measure | result | target | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
