"""Reference gRPC services on ephemeral ports, for any test module, and the session's.

    with running_reference_services() as services:
        client = MeteringClient(services.metering_address, timeout=1.0)

Fault tests slow or break a real server through its servicer:
`services.metering.delay_seconds = 2.0` makes every call wait before answering,
`services.oversight.fail_with = grpc.StatusCode.INTERNAL` makes every call fail.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from grpc_clients.health import METERING_SERVICE_NAME, OVERSIGHT_SERVICE_NAME, check_health
from reference_services.server import ReferenceServices, start_reference_services


@contextmanager
def running_reference_services(**kwargs) -> Iterator[ReferenceServices]:
    """Start both reference services on 127.0.0.1 ephemeral ports; stop them afterwards.

    Keyword arguments go to `start_reference_services` (e.g. `metering_config=`).
    """
    services = start_reference_services(**kwargs)
    try:
        yield services
    finally:
        services.stop(grace=0)


LISTENING = re.compile(r"(creto\.\w+\.v1\.\w+) listening on ([\d.]+):(\d+)")
READY = "reference services ready"
START_TIMEOUT_SECONDS = 20


@dataclass
class ServicesElsewhere:
    """Reference services in processes of their own: the session's services when the suite
    runs with ``TEST_REFERENCE_SERVICES=processes`` (started here, one process per service as
    compose.yaml runs them, stopped at the end) or ``TEST_METERING_GRPC_ADDRESS`` and
    ``TEST_OVERSIGHT_GRPC_ADDRESS`` (started by someone else, left running). The suite reaches
    them only through their addresses, as the server does."""

    metering_address: str
    oversight_address: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def at(cls, metering_address: str, oversight_address: str) -> ServicesElsewhere:
        services = cls(metering_address, oversight_address)
        services.check_serving()
        return services

    @classmethod
    def started(cls) -> ServicesElsewhere:
        """``python -m reference_services`` twice, metering in one process and oversight in
        the other, on ephemeral loopback ports read from what they print."""
        processes, logs, addresses = [], [], {}
        try:
            for metering, oversight in (("127.0.0.1:0", "none"), ("none", "127.0.0.1:0")):
                log = Path(tempfile.mkstemp(prefix="reference-services-", suffix=".log")[1])
                with log.open("w") as output:
                    processes.append(
                        subprocess.Popen(
                            [
                                *(sys.executable, "-m", "reference_services"),
                                *("--metering", metering, "--oversight", oversight),
                            ],
                            cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL,
                            stderr=output,
                        )
                    )
                logs.append(log)
            for process, log in zip(processes, logs, strict=True):
                addresses.update(_wait_listening(process, log))
            services = cls(
                addresses[METERING_SERVICE_NAME],
                addresses[OVERSIGHT_SERVICE_NAME],
                processes=processes,
                logs=logs,
            )
        except BaseException:
            for process in processes:
                process.kill()
            raise
        services.check_serving()
        return services

    def check_serving(self) -> None:
        for address, name in (
            (self.metering_address, METERING_SERVICE_NAME),
            (self.oversight_address, OVERSIGHT_SERVICE_NAME),
        ):
            if not check_health(address, name, timeout=5.0):
                raise RuntimeError(f"{name} does not answer its health check at {address}")

    def stop(self, grace: float = 1.0) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=grace + 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for log in self.logs:
            log.unlink(missing_ok=True)


def _wait_listening(process: subprocess.Popen, log: Path) -> dict[str, str]:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if READY in text:
            return {name: f"{host}:{port}" for name, host, port in LISTENING.findall(text)}
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"reference services did not start:\n{log.read_text(errors='replace')}")


def session_reference_services() -> ReferenceServices | ServicesElsewhere:
    """The services the whole test session uses: in this process (the default), in processes
    of their own started here (``TEST_REFERENCE_SERVICES=processes``), or already running at
    ``TEST_METERING_GRPC_ADDRESS`` and ``TEST_OVERSIGHT_GRPC_ADDRESS``. Tests that stop, slow
    or break a service start a private in-process pair whatever this says
    (``fresh_reference_services``): only a servicer in the test's process can be told to."""
    metering = os.environ.get("TEST_METERING_GRPC_ADDRESS", "").strip()
    oversight = os.environ.get("TEST_OVERSIGHT_GRPC_ADDRESS", "").strip()
    if metering or oversight:
        if not (metering and oversight):
            raise RuntimeError(
                "set both TEST_METERING_GRPC_ADDRESS and TEST_OVERSIGHT_GRPC_ADDRESS, or neither"
            )
        return ServicesElsewhere.at(metering, oversight)
    mode = os.environ.get("TEST_REFERENCE_SERVICES", "in-process").strip()
    if mode == "processes":
        return ServicesElsewhere.started()
    if mode != "in-process":
        raise RuntimeError(f"TEST_REFERENCE_SERVICES is 'in-process' or 'processes', not {mode!r}")
    return start_reference_services()
