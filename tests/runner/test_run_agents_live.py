"""``manage.py run_agents`` against a live server, as an external client.

The server (``manage.py serve``: daphne, the market feed, a real WebSocket) runs in its own
process on a SQLite file, with the session's reference gRPC services and the request limit
on. The runner runs in another process and knows only the server's URL and two owners'
tokens. The test then reads the outcome as the owners and operators would (REST) and, for
the ledger's invariant, from the server's database.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from decimal import Decimal

import pytest

from tests.realtime.servers import BASE_DIR, PYTHON, ServerProcess, manage, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

RUN_SECONDS = 40

# Short windows on a fast market (4 ticks a second), so every rule has signals in the run.
TEST_AGENTS = {
    "Fast Momentum": (
        "alice",
        "momentum",
        {"short_window": 3, "long_window": 8, "signal_ticks": 3, "symbols": ["AAPL", "MSFT"]},
    ),
    "Fast Reversion": ("alice", "mean_reversion", {"window": 10, "k": "1.5"}),
    "Fast Arbitrage": ("bob", "arbitrage", {"window": 10, "entry_z": "1.5"}),
    # Every buy it may size above the approval threshold is: its first quote waits.
    "Whale Maker": ("bob", "market_making", {"oversize_every": 1}),
    "Doomed Maker": ("alice", "market_making", {"spread": "0.004"}),
    # Paused by its owner before the run: it idles.
    "Paused Maker": ("bob", "market_making", {}),
}

BOOKS = """
import json
from django.db.models import Sum
from agents.models import Agent
rows = {}
for agent in Agent.objects.all():
    cost = agent.positions.aggregate(total=Sum("cost_basis"))["total"] or 0
    rows[agent.name] = [str(agent.cash_balance + cost), str(agent.budget + agent.realized_pnl)]
print(json.dumps(rows))
"""


def _http(method: str, url: str, *, token: str, body: dict | None = None):
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, method=method)  # noqa: S310 (checked above)
    request.add_header("Accept", "application/json")
    request.add_header("Authorization", f"Token {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data=data, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture
def live(tmp_path, reference_services):
    """A seeded server on its own SQLite file; yields (server, env, {username: token})."""
    env = server_env(
        reference_services,
        database_url=f"sqlite:///{tmp_path / 'runner.db'}",
        MARKET_TICK_MS="250",
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT="1000/1m",
    )

    manage("migrate", "--noinput", env=env)
    seeded = manage("seed_demo", env=env)
    tokens = dict(re.findall(r"^\s*(\w+) / \S+\s+token (\w+)", seeded, flags=re.MULTILINE))
    server = ServerProcess(
        [str(PYTHON), "manage.py", "serve", "--host", "127.0.0.1", "--port", "{port}"], env
    )
    try:
        server.wait_ready()
        yield server, manage, env, tokens
    finally:
        server.stop()


def test_the_runner_trades_by_strategy_obeys_governance_and_stops_a_terminated_agent(
    live, tmp_path
):
    server, manage, env, tokens = live
    api = f"{server.http}/api/v1"

    # given: agents of two owners, one per rule, created over the API
    agents = {}
    for name, (owner, strategy, params) in TEST_AGENTS.items():
        status, agent = _http(
            "POST",
            f"{api}/agents",
            token=tokens[owner],
            body={
                "name": name,
                "budget": "100000",
                "strategy": strategy,
                "config": {"strategy_params": params},
            },
        )
        assert status == 201, agent
        agents[name] = agent

    paused = agents["Paused Maker"]["id"]
    status, _ = _http(
        "PATCH", f"{api}/agents/{paused}", token=tokens["bob"], body={"status": "paused"}
    )
    assert status == 200

    # when: the runner drives them, knowing only the URL and the owners' tokens
    log_path = tmp_path / "runner.log"
    with log_path.open("w") as log:
        runner = subprocess.Popen(
            [
                str(PYTHON),
                "manage.py",
                "run_agents",
                "--url",
                server.http,
                "--token",
                tokens["alice"],
                "--token",
                tokens["bob"],
                *[arg for name in TEST_AGENTS for arg in ("--agent", name)],
                "--duration",
                str(RUN_SECONDS),
                "--pace",
                "2",
                "--rate",
                "300/1m",
                "--burst",
                "30",
                "--progress",
                "10",
                "--json-summary",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            # and the owner pulls the kill switch on one of them once it has traded
            doomed = agents["Doomed Maker"]["id"]
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                status, page = _http("GET", f"{api}/agents/{doomed}/trades", token=tokens["alice"])
                if status == 200 and page["count"]:
                    break
                time.sleep(0.5)
            assert page["count"], "the market maker placed no order:\n" + log_path.read_text()
            status, _ = _http("DELETE", f"{api}/agents/{doomed}", token=tokens["alice"])
            assert status == 204
            killed_at = time.time()
            runner.wait(timeout=RUN_SECONDS + 30)
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
    output = log_path.read_text()
    assert runner.returncode == 0, output
    summary = json.loads(re.search(r"^summary (.*)$", output, flags=re.MULTILINE).group(1))

    # then: no answer of the server was a 5xx, and the request limit was never hit
    assert summary["server_errors"] == 0, output
    assert all(int(code) < 500 for code in summary["statuses"] if code != "None"), summary
    assert "429" not in summary["statuses"], summary
    assert "Traceback" not in server.output(), server.output()

    # orders from at least three strategies, as the server recorded them
    traded = set()
    for name, agent in agents.items():
        owner = tokens[TEST_AGENTS[name][0]]
        status, page = _http("GET", f"{api}/agents/{agent['id']}/trades", token=owner)
        assert status == 200
        if page["count"]:
            traded.add(agent["strategy"])
    assert len(traded) >= 3, (traded, output)

    # an order waits for an operator's approval: placed by the runner, not resubmitted
    status, pending = _http(
        "GET",
        f"{api}/oversight/requests?status=pending&agent_id={agents['Whale Maker']['id']}",
        token=tokens["operator"],
    )
    assert status == 200
    assert pending["count"] == 1, (pending, output)
    assert "Whale Maker: buy" in output and "waits for an operator's approval" in output

    # the terminated agent's loop stopped and nothing was placed after its termination
    assert "Doomed Maker: terminated by the kill switch" in output, output
    assert "Doomed Maker: stopped (terminated)" in output, output
    status, page = _http(
        "GET", f"{api}/agents/{doomed}/trades?page_size=200", token=tokens["alice"]
    )
    created = [t["created_at"] for t in page["results"]]
    assert all(_epoch(stamp) <= killed_at for stamp in created), (created, killed_at)
    assert output.count("Doomed Maker: ") and "Doomed Maker: buy" in output
    assert summary["agents"]["Doomed Maker"]["status"] == "terminated"

    # the paused agent placed nothing
    status, page = _http("GET", f"{api}/agents/{paused}/trades", token=tokens["bob"])
    assert page["count"] == 0
    assert summary["agents"]["Paused Maker"]["status"] == "paused"

    # the books balance for every agent: cash + positions at cost = budget + realised P&L
    books = json.loads(manage("shell", "-c", BOOKS, env=env).strip().splitlines()[-1])
    assert set(TEST_AGENTS) <= set(books)
    for name, (held, owed) in books.items():
        assert Decimal(held) == Decimal(owed), (name, held, owed)


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
