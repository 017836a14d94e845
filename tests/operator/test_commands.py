"""The operators' manage.py commands: seeding, bulk agents, the market feed, the background
jobs, the gRPC servers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _row_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def _seed(*args) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def _token_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if " token " in line]


def test_seed_demo_creates_the_demo_and_a_second_run_changes_nothing():
    # given
    from trades.models import Trade

    first = _seed()
    counts = _row_counts()

    # when
    second = _seed()

    # then
    assert _row_counts() == counts
    assert _token_lines(first) == _token_lines(second)
    assert [line.split()[0] for line in _token_lines(first)] == ["operator", "alice", "bob"]
    user = get_user_model().objects.get(username="operator")
    assert user.check_password("operator-demo-pass") and user.is_staff
    assert counts["agents.Agent"] == 4
    assert len({agent.strategy for agent in apps.get_model("agents.Agent").objects.all()}) == 4
    assert Trade.objects.filter(status="filled").count() >= 3
    pending = Trade.objects.get(status="pending_approval")
    assert pending.approval_request.status == "pending"
    assert pending.agent.owner.username == "alice"


def test_seed_demo_if_empty_leaves_an_existing_database_alone(user_factory):
    # given
    user_factory(username="someone")
    counts = _row_counts()

    # when
    output = _seed("--if-empty")

    # then
    assert "not seeding" in output
    assert _row_counts() == counts


def test_demo_logins_lists_only_seeded_users():
    from agents.demo import demo_logins

    assert demo_logins() == []
    _seed()
    lines = demo_logins()
    assert lines[0].startswith("operator / operator-demo-pass  token ")


def test_seed_agents_creates_a_thousand_agents(user_factory):
    # given
    from agents.models import Agent

    owner = user_factory(username="bulk-owner")
    out, err = StringIO(), StringIO()

    # when
    started = time.monotonic()
    call_command("seed_agents", "--count", "1000", "--owner", "bulk-owner", stdout=out, stderr=err)
    elapsed = time.monotonic() - started

    # then
    assert Agent.objects.filter(owner=owner).count() == 1000
    assert "Created 1000 agents" in out.getvalue()
    assert "1000/1000" in err.getvalue()  # the progress bar
    assert elapsed < 120


def test_seed_agents_progress_shows_the_rate_agents_are_created_at(user_factory):
    # given
    user_factory(username="rate-owner")
    err = StringIO()

    # when
    started = time.monotonic()
    call_command("seed_agents", "--count", "50", "--owner", "rate-owner", stderr=err)
    elapsed = time.monotonic() - started

    # then: the bar ends when the agents exist, at their real rate (not that of the numbering)
    shown_rate = float(re.findall(r"([\d.]+)agent/s", err.getvalue())[-1])
    assert shown_rate < 3 * 50 / elapsed, (shown_rate, elapsed)


def test_seed_agents_says_agent_for_one(user_factory):
    user_factory(username="single-owner")
    out = StringIO()

    call_command(
        "seed_agents", "--count", "1", "--owner", "single-owner", "--no-progress", stdout=out
    )

    assert "Created 1 agent for single-owner" in out.getvalue()


def test_seed_agents_refuses_an_unknown_owner_and_bad_counts(user_factory):
    user_factory(username="real")
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("seed_agents", "--count", "3", "--owner", "ghost")
    with pytest.raises(CommandError, match="--count"):
        call_command("seed_agents", "--count", "zero", "--owner", "real")
    with pytest.raises(CommandError, match="--count"):
        call_command("seed_agents", "--count", "0", "--owner", "real")
    with pytest.raises(CommandError, match="--budget"):
        call_command("seed_agents", "--count", "1", "--owner", "real", "--budget", "5")


# run_market closes stale connections between ticks, as a long-running process must; that
# ends a test transaction, so this test commits for real.
@pytest.mark.django_db(transaction=True)
def test_run_market_ticks_the_prices(settings):
    # given
    from trades.market import price_row

    settings.MARKET_TICK_MS = 50
    before = price_row("AAPL").seq
    out = StringIO()

    # when
    call_command("run_market", "--ticks", "4", stdout=out)

    # then
    assert price_row("AAPL").seq >= before + 1
    assert "stopped after 4 ticks" in out.getvalue()
    assert "0 failed" in out.getvalue()


def test_run_market_rejects_negative_ticks():
    with pytest.raises(CommandError, match="--ticks"):
        call_command("run_market", "--ticks", "-1")


def test_run_reference_services_rejects_a_bad_address():
    with pytest.raises(CommandError, match="--metering must be HOST:PORT"):
        call_command("run_reference_services", "--metering", "nowhere")


def test_run_reference_services_serves_until_sigterm(tmp_path):
    # given
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"}
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_reference_services",
            "--metering",
            "127.0.0.1:0",
            "--oversight",
            "127.0.0.1:0",
            "--grace",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # when: it reports its addresses
        ready = ""
        deadline = time.monotonic() + 30
        while "Ctrl-C to stop" not in ready and time.monotonic() < deadline:
            ready += process.stdout.readline()
        assert "Metering gRPC on 127.0.0.1:" in ready, ready

        from grpc_clients.health import METERING_SERVICE_NAME, check_health

        address = ready.split("Metering gRPC on ", 1)[1].split(",", 1)[0]
        assert check_health(address, METERING_SERVICE_NAME, timeout=2.0)
        process.send_signal(signal.SIGTERM)

        # then: a clean exit
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_jobs_ticks_the_market_until_sigterm_then_exits_0(tmp_path, reference_services):
    # given a migrated database of its own
    database = tmp_path / "jobs.db"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{database}",
        EMBEDDED_SERVICES="false",
        METERING_GRPC_ADDRESS=reference_services.metering_address,
        OVERSIGHT_GRPC_ADDRESS=reference_services.oversight_address,
        MARKET_TICK_MS="100",
        PYTHONUNBUFFERED="1",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = tmp_path / "jobs.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_jobs"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # when it has run for a while
        deadline = time.monotonic() + 30
        while "Background jobs running" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)

        # then the market has ticked: every symbol's seq advanced
        import sqlite3

        with sqlite3.connect(database) as db:
            seqs = dict(db.execute("SELECT symbol, seq FROM trades_marketprice").fetchall())
        assert seqs and min(seqs.values()) >= 3, (seqs, log.read_text())

        # and SIGTERM stops the jobs and exits 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()
        assert "Stopped." in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "command", ["seed_demo", "seed_agents", "run_market", "run_jobs", "run_reference_services"]
)
def test_every_command_explains_itself(command):
    result = subprocess.run(
        [sys.executable, "manage.py", command, "--help"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: manage.py " + command in result.stdout


def test_a_failing_command_exits_non_zero():
    result = subprocess.run(
        [sys.executable, "manage.py", "seed_agents", "--count", "-4", "--owner", "x"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "CommandError" in result.stderr or "--count" in result.stderr
