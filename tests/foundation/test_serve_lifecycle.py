"""`manage.py serve` as `make run` starts it: embedded gRPC services, ready, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.helpers import free_port
from tests.realtime.servers import BASE_DIR, PYTHON

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_embeds_the_services_answers_ready_and_stops_cleanly(tmp_path, stop_signal):
    port, metering, oversight = free_port(), free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_ENV="development",
        DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}",
        EMBEDDED_SERVICES="true",
        METERING_GRPC_ADDRESS=f"localhost:{metering}",
        OVERSIGHT_GRPC_ADDRESS=f"localhost:{oversight}",
        PYTHONUNBUFFERED="1",
    )
    subprocess.run(
        [str(PYTHON), "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(PYTHON), "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # ready within 15 s of starting, once installed and migrated
        started = time.monotonic()
        status = None
        while time.monotonic() - started < 15:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/health/ready")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert status == 200, log.read_text()
        assert body["checks"] == {
            "database": "ok",
            "metering": "ok",
            "oversight": "ok",
            "channel_layer": "ok",
        }
        assert "Trading Demo Server" in log.read_text()
        # when
        server.send_signal(stop_signal)
        # then
        assert server.wait(timeout=15) == 0, log.read_text()
        assert "Stopped." in log.read_text()
        for freed in (port, metering, oversight):
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", freed)) != 0, f"port {freed} still open"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=5)
