"""`python -m reference_services` as a standalone process."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from grpc_clients.health import METERING_SERVICE_NAME, OVERSIGHT_SERVICE_NAME, check_health

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"(creto\.\w+\.v1\.\w+) listening on ([\d.]+):(\d+)")


def test_standalone_process_serves_health_and_exits_cleanly_on_sigterm():
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "reference_services"),
            *("--metering", "127.0.0.1:0"),
            *("--oversight", "127.0.0.1:0"),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    try:
        addresses: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while len(addresses) < 2 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if match := LISTENING.search(line):
                addresses[match[1]] = f"{match[2]}:{match[3]}"
        assert set(addresses) == {METERING_SERVICE_NAME, OVERSIGHT_SERVICE_NAME}

        for name, address in addresses.items():
            assert check_health(address, name, timeout=2.0)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
