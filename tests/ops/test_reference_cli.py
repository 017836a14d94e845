"""`python -m reference_services` running one service per process, as compose.yaml does."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grpc_clients.health import METERING_SERVICE_NAME, OVERSIGHT_SERVICE_NAME, check_health

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"(creto\.\w+\.v1\.\w+) listening on ([\d.]+):(\d+)")


def _run(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reference_services", *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


@pytest.mark.parametrize(
    ("args", "serving", "absent"),
    [
        (
            ("--metering", "127.0.0.1:0", "--oversight", "none"),
            METERING_SERVICE_NAME,
            OVERSIGHT_SERVICE_NAME,
        ),
        (
            ("--metering", "none", "--oversight", "127.0.0.1:0"),
            OVERSIGHT_SERVICE_NAME,
            METERING_SERVICE_NAME,
        ),
    ],
)
def test_one_service_per_process(args, serving, absent):
    # given a process asked to run only one of the two services
    process = _run(*args)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    try:
        seen: dict[str, str] = {}
        ready = False
        deadline = time.monotonic() + 10
        while not ready and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if match := LISTENING.search(line):
                seen[match[1]] = f"{match[2]}:{match[3]}"
            ready = "reference services ready" in line

        # then it serves that one, healthy, and not the other
        assert ready
        assert set(seen) == {serving}
        assert check_health(seen[serving], serving, timeout=2.0)
        assert not check_health(seen[serving], absent, timeout=1.0)

        # and stops cleanly on SIGTERM
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_refuses_to_run_nothing():
    process = _run("--metering", "none", "--oversight", "none")
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert "at least one of --metering and --oversight" in stderr
