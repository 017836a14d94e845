"""Real server processes for the end-to-end WebSocket tests, bounded by timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect

from tests.helpers import free_port

BASE_DIR = Path(__file__).resolve().parents[2]
PYTHON = BASE_DIR / ".venv" / "bin" / "python"
DAPHNE = BASE_DIR / ".venv" / "bin" / "daphne"
GUNICORN = BASE_DIR / ".venv" / "bin" / "gunicorn"
UVICORN = BASE_DIR / ".venv" / "bin" / "uvicorn"
START_TIMEOUT_SECONDS = 30
RECEIVE_TIMEOUT_SECONDS = 10


def gunicorn_command(*options: str, app: str = "config.wsgi:application") -> list[str]:
    """gunicorn as production runs it (``config/gunicorn.conf.py``) on a free loopback port
    (``{port}``, filled in by ``ServerProcess``), serving ``app``."""
    config = ("--config", "config/gunicorn.conf.py", "--bind", "127.0.0.1:{port}")
    return [str(GUNICORN), *config, *options, app]


def shared_database_url() -> str:
    """The URL of the database this test process uses (pytest-django's ``test_<name>``), for
    server processes that must see the test's committed rows (``django_db(transaction=True)``).
    """
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


def server_env(services, *, database_url: str, redis_url: str | None = None, **overrides) -> dict:
    """The environment of a server process for tests: development settings on the given
    database (and Redis, if any), the test session's reference gRPC services, no rate limit,
    quiet logs. ``overrides`` (strings) are added last."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "DATABASE_URL", "DATABASE_PATH", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_ENV="development",
        DATABASE_URL=database_url,
        EMBEDDED_SERVICES="false",
        METERING_GRPC_ADDRESS=services.metering_address,
        OVERSIGHT_GRPC_ADDRESS=services.oversight_address,
        RATE_LIMIT_ENABLED="false",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(overrides)
    return env


def manage(*args: str, env: dict) -> str:
    """Run ``manage.py`` with the given arguments in a server's environment; its stdout.

    Fails the test, with the command's output, if the command fails.
    """
    done = subprocess.run(
        [str(PYTHON), "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


class ServerProcess:
    """A server command (``{port}`` in it replaced by a free loopback port), its output kept
    in a temporary file for the failure message."""

    def __init__(self, command: list[str], env: dict[str, str]):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"server-{self.port}-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in command],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited early:\n{self.output()}")
            try:
                url = f"{self.http}/health/live"
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise AssertionError(
            f"the server did not start in {START_TIMEOUT_SECONDS}s:\n{self.output()}"
        )

    def wait_output(self, text: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Wait until the process has printed ``text`` (a process that serves no HTTP)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output(tail=None):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"the process exited early:\n{self.output()}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not printed in {timeout}s:\n{self.output()}")

    def output(self, tail: int | None = 4000) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM to the process alone (not its children); its exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


async def ws_open(server: ServerProcess, token: str):
    return await connect(
        f"ws://127.0.0.1:{server.port}/ws/?token={token}",
        origin=server.http,
        open_timeout=RECEIVE_TIMEOUT_SECONDS,
    )


async def ws_request(client, message: dict) -> dict:
    await client.send(json.dumps(message))
    return await ws_receive(client)


async def ws_receive(client) -> dict:
    return json.loads(await asyncio.wait_for(client.recv(), RECEIVE_TIMEOUT_SECONDS))
