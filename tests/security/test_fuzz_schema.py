"""Schemathesis against the OpenAPI schema the server publishes at ``/api/schema/``.

Every operation is called, authenticated, with real agent, trade and approval request ids in
its path (generated ids only find 404s), with bodies, queries and headers generated from the
schema, valid and invalid. Each answer must be no 5xx, have a status the schema declares, a
declared content type, and a body matching the declared schema (problem documents included).
The example count is bounded and derandomized so CI stays fast and reproducible.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# The decision routes are for operators; the rest is called as the agent's owner.
OPERATOR_ROUTES = ("/approve", "/reject")


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler, minus the per-request connection close (as Django's test client
    does): the test's transaction must survive the requests (CONN_MAX_AGE=0 on PostgreSQL)."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(mine, operator, client_for):
    from rest_framework.authtoken.models import Token

    client_for(operator)  # creates the operator's token
    return {
        "owner_token": mine.token,
        "operator_token": Token.objects.get(user=operator).key,
        "path": {
            "agent_id": mine.agent_id,
            "trade_id": mine.open_trade_id,
            "id": mine.approval_request_id,
        },
    }


def published_schema() -> dict:
    """The schema exactly as ``GET /api/schema/?format=json`` serves it."""
    from django.test import Client

    response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


# Loaded at collection time (pytest-django has configured Django by then); one generated test
# per operation. The schema view reads no database.
schema = schemathesis.openapi.from_dict(published_schema())


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_within_its_schema(case, fuzz_world, wsgi_app):
    # given real ids of the caller's own objects in the path
    for name, value in fuzz_world["path"].items():
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = value
    operator_route = case.operation.path.endswith(OPERATOR_ROUTES)
    token = fuzz_world["operator_token" if operator_route else "owner_token"]
    # when / then (identity: the WSGI test client does not gunzip; gzip has its own test)
    case.call_and_validate(
        app=wsgi_app,
        headers={"Authorization": f"Token {token}", "Accept-Encoding": "identity"},
        checks=CHECKS,
    )
