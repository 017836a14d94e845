"""Observability: the JSON access log line of a request, and /metrics after some traffic."""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from pythonjsonlogger.json import JsonFormatter

from observability.request_context import RequestContextFilter


@pytest.fixture
def json_access_log():
    """The access logger's output, formatted by the production JSON formatter, one per line."""
    spec = settings.LOGGING["formatters"]["json"]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(fmt=spec["fmt"], rename_fields=spec["rename_fields"]))
    handler.addFilter(RequestContextFilter())
    logger = logging.getLogger("trading_demo.access")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line]

    yield lines
    logger.removeHandler(handler)
    logger.setLevel(previous)


def test_access_log_line_is_json_with_the_callers_request_id(client, json_access_log):
    # when a caller sends its own request id
    response = client.get("/health/live", headers={"X-Request-ID": "trace-abc-123"})

    # then it is echoed, and the one access-log line carries it with the request's facts
    assert response["X-Request-ID"] == "trace-abc-123"
    (line,) = json_access_log()
    assert line["request_id"] == "trace-abc-123"
    assert line["method"] == "GET"
    assert line["path"] == "/health/live"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float | int)
    assert line["user"] is None
    assert line["agent"] is None
    assert line["level"] == "INFO"
    assert line["logger"] == "trading_demo.access"


def test_generated_request_id_is_echoed_and_logged(client, json_access_log):
    # when the caller sends none (or an unusable one)
    response = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces\n"})

    # then one is generated, echoed and logged
    generated = response["X-Request-ID"]
    assert generated and " " not in generated
    (line,) = json_access_log()
    assert line["request_id"] == generated


async def test_async_path_logs_the_request_id_too(async_client, json_access_log):
    # given Django serving through its async handler (as under daphne)
    response = await async_client.get("/health/live", headers={"X-Request-ID": "async-req-1"})

    assert response["X-Request-ID"] == "async-req-1"
    (line,) = json_access_log()
    assert (line["request_id"], line["status"], line["path"]) == (
        "async-req-1",
        200,
        "/health/live",
    )


@pytest.mark.django_db
def test_access_log_names_the_user_and_the_agent(owner, client_for, json_access_log):
    # when an authenticated owner asks about an agent
    agent_id = uuid.uuid4()
    api = client_for(owner)
    api.get(f"/api/v1/agents/{agent_id}", HTTP_X_REQUEST_ID="agent-lookup-1")

    # then the line says who asked and about which agent, with the route pattern
    (line,) = json_access_log()
    assert line["user"] == "owner"
    assert line["agent"] == str(agent_id)
    assert line["route"] == "api/v1/agents/<uuid:agent_id>"
    assert line["request_id"] == "agent-lookup-1"


@pytest.mark.django_db
def test_access_log_names_a_session_user_of_a_django_view(operator, client, json_access_log):
    # given a staff operator logged in with a session (the admin)
    operator.is_staff = True
    operator.save(update_fields=["is_staff"])
    client.force_login(operator)

    # when they open a page that is a plain Django view
    response = client.get("/admin/")

    # then the line names them
    assert response.status_code == 200
    (line,) = json_access_log()
    assert line["user"] == "operator"


def _scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = family.samples
    return families


def _value(samples, name: str, **labels) -> float:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no sample {name} {labels} in {samples}")


@pytest.fixture
def domain_rows(owner):
    """Rows as the domain leaves them: a pending approval, an outbox backlog, trades."""
    from agents.models import Agent
    from metering.models import DeliveryState, UsageEvent
    from oversight.models import ApprovalRequest
    from trades.models import Trade

    agent = Agent.objects.create(
        owner=owner, name="metrics", budget=Decimal("50000"), cash_balance=Decimal("50000")
    )

    def trade(status: str) -> Trade:
        return Trade.objects.create(
            agent=agent, symbol="AAPL", side="buy", quantity=Decimal("1"), status=status
        )

    for status in ("filled", "filled", "open", "pending_approval"):
        trade(status)
    waiting = Trade.objects.filter(status="pending_approval").get()
    now = timezone.now()
    request = ApprovalRequest.objects.create(
        id=uuid.uuid4(),
        trade=waiting,
        agent=agent,
        amount=Decimal("20000"),
        expires_at=now + timedelta(hours=1),
    )
    # created_at is auto_now_add: age it with an update, as if it had waited two minutes.
    ApprovalRequest.objects.filter(pk=request.pk).update(created_at=now - timedelta(minutes=2))
    for index, state in enumerate(
        [DeliveryState.PENDING, DeliveryState.PENDING, DeliveryState.DELIVERED]
    ):
        UsageEvent.objects.create(
            transaction_id=f"metrics-{index}",
            agent=agent,
            code="api_calls",
            quantity=1,
            occurred_at=now - timedelta(seconds=30 * (index + 1)),
            delivery_state=state,
        )
    return agent


@pytest.mark.django_db
def test_metrics_after_some_requests(client, domain_rows):
    # given some traffic, two requests on one route with different path values
    client.get("/health/live")
    client.get("/problems/not-found/")
    client.get("/problems/conflict/")
    client.get("/no/such/page")

    # when Prometheus scrapes
    families = _scrape(client)

    # then latency is observed per route pattern, never per raw path
    http = families["trading_http_request_duration_seconds"]
    problems_count = _value(
        http,
        "trading_http_request_duration_seconds_count",
        method="GET",
        route="problems/<slug:code>/",
    )
    assert problems_count >= 2
    assert _value(http, "trading_http_request_duration_seconds_count", route="health/live") >= 1
    assert _value(http, "trading_http_request_duration_seconds_count", route="<unmatched>") >= 1
    routes = {sample.labels.get("route") for sample in http}
    assert not any("not-found" in route or "/no/such" in route for route in routes)

    # and the shared state is computed from the database at scrape time
    assert _value(families["trading_approval_queue_depth"], "trading_approval_queue_depth") == 1
    age = _value(
        families["trading_approval_oldest_pending_age_seconds"],
        "trading_approval_oldest_pending_age_seconds",
    )
    assert 110 <= age <= 600
    assert _value(families["trading_outbox_backlog"], "trading_outbox_backlog") == 2
    outbox_age = _value(
        families["trading_outbox_oldest_pending_age_seconds"],
        "trading_outbox_oldest_pending_age_seconds",
    )
    assert 55 <= outbox_age <= 600
    by_status = families["trading_trades_by_status"]
    assert _value(by_status, "trading_trades_by_status", status="filled") == 2
    assert _value(by_status, "trading_trades_by_status", status="open") == 1
    assert _value(by_status, "trading_trades_by_status", status="pending_approval") == 1
    assert _value(by_status, "trading_trades_by_status", status="rejected") == 0
    assert _value(families["trading_domain_metrics_up"], "trading_domain_metrics_up") == 1

    # and the process-level families are exposed too
    for name in (
        "trading_trades",
        "trading_grpc_calls",
        "trading_grpc_call_duration_seconds",
        "trading_websocket_connections",
        "trading_channel_layer_dropped",
        "trading_leader",
    ):
        assert name in families, name


def test_scrape_survives_a_database_that_cannot_be_read(client):
    # given no database access at all (pytest-django refuses it outside django_db tests)

    # when Prometheus scrapes
    families = _scrape(client)

    # then the scrape still answers, and says the database gauges are missing
    assert _value(families["trading_domain_metrics_up"], "trading_domain_metrics_up") == 0
    assert families["trading_approval_queue_depth"] == []
    assert "trading_http_request_duration_seconds" in families
