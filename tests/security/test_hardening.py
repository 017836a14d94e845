"""HTTP hardening: security headers, CORS, gzip, the production deploy check, and no secret
in any log line."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import secrets
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import path as url_path
from rest_framework.test import APIClient
from rest_framework.views import APIView

# Imported at collection: it imports config.asgi, which runs django.setup(), whose logging
# dictConfig would drop the capturing handlers if it happened inside the test.
from tests.helpers import agent_url, trades_url
from tests.realtime.helpers import open_socket

ROOT = Path(__file__).resolve().parents[2]


# --- security headers -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    ["/api/v1/agents", "/api", "/api/v1/no-such-route", "/dashboard/", "/admin/login/"],
)
def test_security_headers_on_api_dashboard_and_admin(owner, owner_client, client, path):
    # the dashboard and the admin as a signed-in browser, the API with a token
    client.force_login(owner)
    response = (owner_client if path.startswith("/api") else client).get(path)
    assert response.status_code in {200, 302, 404}, response.status_code
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp


# --- CORS -----------------------------------------------------------------------------------


def _preflight(origin: str):
    return APIClient().options(
        "/api/v1/agents/00000000-0000-0000-0000-000000000000/trades",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key",
    )


@pytest.mark.django_db
def test_cors_preflight_from_the_client_url_allows_the_idempotency_key():
    origin = settings.CORS_ALLOWED_ORIGINS[0]
    response = _preflight(origin)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == origin
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]


@pytest.mark.django_db
def test_cors_preflight_from_another_origin_gets_no_allow_origin():
    response = _preflight("https://evil.example")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
def test_cors_response_exposes_retry_and_replay_headers(owner_client):
    origin = settings.CORS_ALLOWED_ORIGINS[0]
    response = owner_client.get("/api/v1/agents", HTTP_ORIGIN=origin)
    assert response["Access-Control-Allow-Origin"] == origin
    exposed = response["Access-Control-Expose-Headers"].lower()
    assert "retry-after" in exposed and "idempotent-replayed" in exposed
    other = owner_client.get("/api/v1/agents", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in other


# --- compression ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_large_json_is_gzipped_when_the_client_accepts_it(owner, owner_client):
    # given a list of 100 agents (tens of kilobytes of JSON)
    from agents.models import Agent

    Agent.objects.bulk_create(
        Agent(owner=owner, name=f"agent {i}", budget=Decimal("1000"), cash_balance=Decimal("1000"))
        for i in range(100)
    )
    # when
    compressed = owner_client.get("/api/v1/agents?page_size=100", HTTP_ACCEPT_ENCODING="gzip")
    plain = owner_client.get("/api/v1/agents?page_size=100")
    # then
    assert compressed["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in compressed["Vary"]
    assert json.loads(gzip.decompress(compressed.content))["count"] == 100
    assert len(compressed.content) * 4 < len(plain.content)
    assert "Content-Encoding" not in plain
    assert plain.json()["count"] == 100


# --- deploy check ---------------------------------------------------------------------------


def test_production_settings_pass_the_deploy_check():
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"))
    }
    env.update(
        DJANGO_ENV="production",
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=secrets.token_urlsafe(48)[:64],
        ALLOWED_HOSTS="example.com",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


# --- secrets in logs ------------------------------------------------------------------------


class _Boom(APIView):
    def get(self, request):
        raise RuntimeError("something broke while serving the request")


urlpatterns = [url_path("api/v1/boom", _Boom.as_view())]
# Everything else still routed, so the access log and the API behave as in production.
from config.urls import urlpatterns as _project_urls  # noqa: E402

urlpatterns += _project_urls


@pytest.fixture
def every_log_line(caplog):
    """Everything logged at DEBUG: each record's message and traceback (caplog), and every
    line as the production console handler writes it (the project's JSON formatter and the
    console handler's filters), extra fields such as the access log's ``path`` included."""
    from pythonjsonlogger.json import JsonFormatter

    console = next(h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler)
    json_format = dict(settings.LOGGING["formatters"]["json"])
    json_format.pop("()")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(**json_format))
    for log_filter in console.filters:
        handler.addFilter(log_filter)
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    for name in ("django.server", "daphne", "drf_problems", "trading_demo.access"):
        caplog.set_level(logging.DEBUG, logger=name)

    def collect() -> str:
        messages = "\n".join(
            f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
        )
        return messages + "\n" + stream.getvalue()

    yield collect
    root.removeHandler(handler)


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF=__name__)
def test_tokens_passwords_and_the_secret_key_never_reach_the_logs(
    user_factory, agent_factory, every_log_line
):
    from asgiref.sync import async_to_sync

    # given a user who logs in with a password and receives a token
    password = "correct-horse-" + secrets.token_hex(8)
    user = user_factory(username="logger")
    user.set_password(password)
    user.save()
    anon = APIClient()
    token = anon.post(
        "/api/v1/auth/token", {"username": "logger", "password": password}, format="json"
    ).json()["token"]
    anon.post(
        "/api/v1/auth/token", {"username": "logger", "password": password + "x"}, format="json"
    )
    agent = agent_factory(user=user, name="Logged")
    # when the token is used in a header, in a query string, on the WebSocket, and a 500 happens
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    client.get("/api/v1/agents")
    client.get(agent_url(agent, f"/portfolio?token={token}"))
    client.post(
        trades_url(agent),
        {"symbol": "NOPE", "side": "buy", "quantity": "1"},
        format="json",
    )
    assert client.get("/api/v1/boom").status_code == 500
    assert APIClient().get(f"/ws/?token={token}").status_code == 404
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION=f"Token {token[:-1]}X")
    assert bad.get("/api/v1/agents").status_code == 401

    async def websocket():
        communicator, connected = await open_socket(token)
        assert connected
        await communicator.send_json_to(
            {"action": "subscribe", "channel": "portfolio", "agent_id": str(agent.pk)}
        )
        await communicator.receive_json_from(timeout=5)
        await communicator.send_to(text_data="{not json")
        await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()

    async_to_sync(websocket)()
    # then
    logs = every_log_line()
    assert "something broke" in logs  # the 500 was logged
    assert "/api/v1/agents" in logs  # and the access log saw the requests
    assert token not in logs
    assert token[:-1] not in logs  # nor the wrong token sent
    assert password not in logs
    assert settings.SECRET_KEY not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "trading_demo.access"]
    assert any(entry["path"] == "/ws/" for entry in access)
    assert all("?" not in entry["path"] for entry in access)  # never a query string
    # Django's own log of the 500 names the request by its method and path only
    assert any(entry.get("request") == "GET /api/v1/boom" for entry in lines)


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("GET /api/v1/agents?token=0123456789abcdef&page=2", "0123456789abcdef"),
        ("headers: Authorization: Token 0123456789abcdef0123", "0123456789abcdef0123"),
        ("login password=hunter2-very-secret", "hunter2-very-secret"),
        ("Cookie sessionid=abcdefabcdef1234", "abcdefabcdef1234"),
    ],
)
def test_the_console_filter_masks_credentials_in_any_message(message, secret):
    from observability.log_redaction import RedactSecretsFilter

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (message,), None)
    clean = RedactSecretsFilter().filter(record)
    assert secret not in clean.getMessage()
    assert "[redacted]" in clean.getMessage()
    assert record.getMessage() == message  # other handlers still get the original record


# --- tracebacks in logs ---------------------------------------------------------------------

_LOG_A_FAILURE = """
import logging, django
django.setup()
try:
    raise RuntimeError("the ledger could not be read")
except RuntimeError:
    logging.getLogger("trading_demo.check").exception("job failed")
"""


def _logged_by_production(**env_overrides: str) -> str:
    """What a production process (DJANGO_ENV=production, its JSON console log) writes when
    it logs a failure with ``logger.exception``."""
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "LOG_TRACEBACKS"}}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="example.com",
        **env_overrides,
    )
    result = subprocess.run(
        [sys.executable, "-c", _LOG_A_FAILURE],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_outside_debug_a_failure_is_logged_as_one_line_without_its_traceback():
    # when a production process logs a failure
    output = _logged_by_production()

    # then one JSON line says what failed, and no traceback reaches the log
    (line,) = [json.loads(text) for text in output.splitlines() if text.startswith("{")]
    assert line["level"] == "ERROR"
    assert line["message"] == "job failed [builtins.RuntimeError: the ledger could not be read]"
    assert "Traceback" not in output
    assert 'File "' not in output
    assert "exc_info" not in line


def test_log_tracebacks_puts_the_traceback_back_for_an_operator_who_asks():
    output = _logged_by_production(LOG_TRACEBACKS="true")

    assert "Traceback" in output
    assert "RuntimeError: the ledger could not be read" in output
