"""gunicorn's own error log follows the application's log rules (``config/gunicorn.conf.py``):
outside ``LOG_TRACEBACKS`` a request that failed outside Django is one line naming its
exception, without a traceback, and secrets in it are masked."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

import pytest

from tests.realtime.servers import START_TIMEOUT_SECONDS, ServerProcess, gunicorn_command

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

COMMAND = gunicorn_command("--workers", "1", app="tests.ops.failing_wsgi:application")


def _production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "LOG_TRACEBACKS"}}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_ENV="production",
        SECRET_KEY="gunicorn-log-test-" + "x" * 50,
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def _failed_request(server: ServerProcess) -> str:
    """Request until gunicorn answers (500: the application failed); its log afterwards."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{server.http}/", timeout=2)  # noqa: S310 - loopback
        except urllib.error.HTTPError as answer:
            assert answer.code == 500
            break
        except OSError:
            time.sleep(0.2)
    else:
        raise AssertionError(f"gunicorn did not answer:\n{server.output()}")
    time.sleep(0.5)  # the worker writes its log line after the answer
    return server.output(tail=None)


def test_outside_debug_a_failed_request_is_one_line_without_traceback_or_secret():
    server = ServerProcess(COMMAND, _production_env())
    try:
        log = _failed_request(server)
    finally:
        server.stop()
    (line,) = [line for line in log.splitlines() if "Error handling request" in line]
    assert "[builtins.RuntimeError: the request failed with token=[redacted]" in line, log
    assert "Traceback" not in log and "failing_wsgi.py" not in log, log
    assert "abcdef123456" not in log, log


def test_log_tracebacks_gives_gunicorn_its_traceback_back():
    server = ServerProcess(COMMAND, _production_env(LOG_TRACEBACKS="true"))
    try:
        log = _failed_request(server)
    finally:
        server.stop()
    assert "Traceback (most recent call last)" in log and "failing_wsgi.py" in log, log
