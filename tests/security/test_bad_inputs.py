"""Hand-written hostile inputs: each gets a 4xx problem document, never a 500, and changes
nothing."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.helpers import assert_problem

JSON = "application/json"


def agent_body(**fields) -> str:
    return json.dumps({"name": "Fuzz", "budget": "5000", **fields})


def order_body(**fields) -> str:
    return json.dumps({"symbol": "AAPL", "side": "buy", "quantity": "1", **fields})


# (label, route: "agents" | "trades" | "patch", raw JSON body)
HOSTILE_BODIES = [
    ("huge budget", "agents", '{"name": "x", "budget": 10000000000000000000000000000000000000000}'),
    ("huge budget string", "agents", agent_body(budget="1" + "0" * 40)),
    ("budget 30 decimals", "agents", agent_body(budget="1000.123456789012345678901234567890")),
    ("budget NaN", "agents", '{"name": "x", "budget": NaN}'),
    ("budget NaN string", "agents", agent_body(budget="NaN")),
    ("budget Infinity", "agents", '{"name": "x", "budget": Infinity}'),
    ("budget -Infinity string", "agents", agent_body(budget="-Infinity")),
    ("budget -0", "agents", agent_body(budget="-0")),
    ("budget string of letters", "agents", agent_body(budget="lots")),
    ("budget list", "agents", agent_body(budget=[1000])),
    ("risk tolerance string", "agents", agent_body(risk_tolerance="high")),
    ("risk tolerance huge", "agents", agent_body(risk_tolerance=10**30)),
    ("name null byte", "agents", agent_body(name="bad\u0000name")),
    ("config not an object", "agents", agent_body(config="{}")),
    ("config huge limit", "agents", agent_body(config={"auto_approval_limit": "1e400"})),
    ("config NaN fraction", "agents", agent_body(config={"approval_budget_fraction": "NaN"})),
    ("body is a list", "agents", "[1, 2, 3]"),
    ("body is a string", "agents", '"agent"'),
    ("quantity 1e30", "trades", order_body(quantity=1e30)),
    ("quantity 1e30 string", "trades", order_body(quantity="1e30")),
    ("quantity 10**40", "trades", order_body(quantity=10**40)),
    ("quantity 30 decimals", "trades", order_body(quantity="1.000000000000000000000000000001")),
    ("quantity NaN", "trades", '{"symbol": "AAPL", "side": "buy", "quantity": NaN}'),
    ("quantity Infinity", "trades", '{"symbol": "AAPL", "side": "buy", "quantity": Infinity}'),
    ("quantity sNaN string", "trades", order_body(quantity="sNaN")),
    ("quantity -0", "trades", order_body(quantity="-0")),
    ("quantity negative", "trades", order_body(quantity="-5")),
    ("quantity letters", "trades", order_body(quantity="ten")),
    ("quantity object", "trades", order_body(quantity={"n": 1})),
    ("limit price NaN", "trades", order_body(type="limit", limit_price="NaN")),
    ("limit price huge", "trades", order_body(type="limit", limit_price="9" * 50)),
    ("limit price 30 decimals", "trades", order_body(type="limit", limit_price="1." + "1" * 30)),
    ("emoji symbol", "trades", order_body(symbol="🚀📈")),
    ("unicode symbol", "trades", order_body(symbol="\uff21\uff21\uff30\uff2c")),
    ("symbol null byte", "trades", order_body(symbol="AAPL\u0000")),
    ("side null byte", "trades", order_body(side="buy\u0000")),
    ("client order id null byte", "trades", order_body(client_order_id="a\u0000b")),
    ("client order id huge", "trades", order_body(client_order_id="x" * 10_000)),
    ("metadata confidence NaN", "trades", order_body(metadata={"confidence": "NaN"})),
    ("metadata confidence huge", "trades", order_body(metadata={"confidence": 1e308 * 10})),
    ("metadata not an object", "trades", order_body(metadata=[1])),
    ("unknown type", "trades", order_body(type="🦄")),
    ("patch name null byte", "patch", json.dumps({"name": "a\u0000"})),
    ("patch status unknown", "patch", json.dumps({"status": "💥"})),
    ("patch config NaN", "patch", json.dumps({"config": {"max_position_fraction": "NaN"}})),
]


@pytest.fixture
def routes(mine):
    return {
        "agents": ("post", "/api/v1/agents"),
        "trades": ("post", f"/api/v1/agents/{mine.agent_id}/trades"),
        "patch": ("patch", f"/api/v1/agents/{mine.agent_id}"),
    }


def _counts():
    from agents.models import Agent
    from metering.models import UsageEvent
    from trades.models import Trade

    return Agent.objects.count(), Trade.objects.count(), UsageEvent.objects.count()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "body"), [(r, b) for _, r, b in HOSTILE_BODIES], ids=[h[0] for h in HOSTILE_BODIES]
)
def test_hostile_body_gets_a_400_problem_and_changes_nothing(mine, routes, route, body):
    # given
    method, path = routes[route]
    before = _counts()
    # when
    response = getattr(mine.client, method)(path, data=body, content_type=JSON)
    # then
    problem = assert_problem(response, 400, "validation-error")
    # field errors, or a body that is not JSON at all (NaN and Infinity are not JSON)
    assert problem.get("errors") or problem["detail"].startswith("Malformed request body")
    # api_calls of a refused request are metered like any other 4xx; nothing else is written
    agents, trades, _ = _counts()
    assert (agents, trades) == before[:2]


@pytest.mark.django_db
def test_deeply_nested_json_is_400_not_a_recursion_error(mine):
    body = "[" * 10_000 + "]" * 10_000
    response = mine.client.post("/api/v1/agents", data=body, content_type=JSON)
    assert_problem(response, 400, "validation-error")
    nested_object = '{"a":' * 10_000 + "1" + "}" * 10_000
    response = mine.client.post(
        f"/api/v1/agents/{mine.agent_id}/trades", data=nested_object, content_type=JSON
    )
    assert_problem(response, 400, "validation-error")
    # deep enough to recurse again where a JSON field is validated or rendered
    deep_config = json.dumps({"name": "Deep", "budget": "5000", "config": {"x": [[[[[[[[]]]]]]]]}})
    deep_config = deep_config.replace("[[[[[[[[]]]]]]]]", "[" * 500 + "]" * 500)
    response = mine.client.post("/api/v1/agents", data=deep_config, content_type=JSON)
    assert_problem(response, 400, "validation-error")


@pytest.mark.django_db
def test_duplicate_keys_take_the_last_value_like_every_json_parser(mine):
    # given a body whose budget key appears twice, the second one out of range
    body = '{"name": "Dup", "budget": "5000", "budget": "1"}'
    # when
    response = mine.client.post("/api/v1/agents", data=body, content_type=JSON)
    # then the last one counts, and is refused
    problem = assert_problem(response, 400, "validation-error")
    assert "budget" in problem["errors"]


@pytest.mark.django_db
def test_invalid_utf8_and_null_bytes_in_raw_body_are_400(mine):
    for raw in (b'{"name": "\xff\xfe", "budget": "5000"}', b'{"name": "a"\x00, "budget": 1}'):
        response = mine.client.post("/api/v1/agents", data=raw, content_type=JSON)
        assert_problem(response, 400, "validation-error")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/xml",
        "application/json-patch+json",
    ],
)
def test_non_json_content_type_is_415_problem(mine, content_type):
    body = "name=x&budget=5000"
    response = mine.client.post("/api/v1/agents", data=body, content_type=content_type)
    assert_problem(response, 415, "unsupported-media-type")
    response = mine.client.post(
        f"/api/v1/agents/{mine.agent_id}/trades", data=body, content_type=content_type
    )
    assert_problem(response, 415, "unsupported-media-type")


@pytest.mark.django_db
def test_eleven_megabyte_body_is_413_problem(mine):
    # given a valid JSON document of 11 MB
    from agents.models import Agent

    before = Agent.objects.count()
    body = json.dumps({"name": "Big", "budget": "5000", "pad": "x" * (11 * 1024 * 1024)})
    # when
    response = mine.client.post("/api/v1/agents", data=body, content_type=JSON)
    # then
    assert_problem(response, 413, "payload-too-large")
    assert Agent.objects.count() == before


@pytest.mark.django_db
def test_a_body_just_under_the_limit_is_parsed(mine):
    # padded with insignificant whitespace: an unknown member would be refused
    body = json.dumps({"name": "Big", "budget": "5000"}) + " " * (9 * 1024 * 1024)
    response = mine.client.post("/api/v1/agents", data=body, content_type=JSON)
    assert response.status_code == 201, response.content[:300]


@pytest.mark.django_db
def test_unknown_query_values_are_400_or_ignored_never_500(mine):
    agent = mine.agent_id
    for path in (
        f"/api/v1/agents/{agent}/portfolio/history?days=NaN",
        f"/api/v1/agents/{agent}/portfolio/history?days=1e30",
        f"/api/v1/agents/{agent}/portfolio/history?days=-1",
        f"/api/v1/metering/agents/{agent}/usage?period=%F0%9F%92%A5",
        f"/api/v1/agents/{agent}/trades?status=%00",
        "/api/v1/agents?page=NaN",
        "/api/v1/agents?page_size=-1",
        "/api/v1/agents?ordering=%00",
        "/api/v1/oversight/requests?agent_id=not-a-uuid",
        "/api/v1/market/prices/%F0%9F%9A%80",
        "/api/v1/market/prices/AAPL%00",
        f"/api/v1/agents/{agent}/trades?symbol=AAPL%00",
        f"/api/v1/agents/{agent}/trades?client_order_id=%00",
        "/api/v1/agents?name=%00",
        "/api/v1/agents?status=active%00",
        f"/api/v1/oversight/requests?agent_id={agent}%00",
    ):
        response = mine.client.get(path)
        assert response.status_code < 500, (path, response.content)
        if response.status_code >= 400:
            assert response["Content-Type"].startswith("application/problem+json"), path


async def _asgi_post(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    """POST through the real ASGI application, the body sent in chunks; returns
    (status, headers, body)."""
    from config.asgi import application
    from tests.asgi import http_scope

    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # the client waits for the answer

    async def send(message):
        sent.append(message)

    scope = http_scope(path, method="POST", headers=headers)
    await asyncio.wait_for(application(scope, receive, send), 30)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {name.lower(): value for name, value in start["headers"]}
    return start["status"], headers, body


MEGABYTE = b"x" * (1024 * 1024)


@pytest.mark.django_db(transaction=True)
async def test_asgi_chunked_body_over_the_limit_is_413():
    # given 11 MB sent in 1 MB chunks without a Content-Length (chunked transfer)
    chunks = [MEGABYTE] * 11
    # when
    status, headers, body = await _asgi_post(
        "/api/v1/agents", chunks, [(b"content-type", b"application/json")]
    )
    # then
    assert status == 413
    assert headers[b"content-type"].startswith(b"application/problem+json")
    assert json.loads(body)["type"].endswith("/problems/payload-too-large/")


@pytest.mark.django_db(transaction=True)
async def test_asgi_declared_content_length_over_the_limit_is_413():
    status, _, body = await _asgi_post(
        "/api/v1/agents",
        [MEGABYTE],
        [(b"content-type", b"application/json"), (b"content-length", b"11534336")],
    )
    assert status == 413
    assert json.loads(body)["status"] == 413


@pytest.mark.django_db(transaction=True)
async def test_asgi_body_under_the_limit_reaches_the_view_in_chunks():
    # given a token login split over three chunks
    from channels.db import database_sync_to_async
    from django.contrib.auth.models import User

    await database_sync_to_async(User.objects.create_user)(username="chunky", password="pw-x1")
    raw = json.dumps({"username": "chunky", "password": "pw-x1"}).encode()
    chunks = [raw[:5], raw[5:20], raw[20:]]
    # when
    status, _, body = await _asgi_post(
        "/api/v1/auth/token",
        chunks,
        [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
    )
    # then
    assert status == 200, body
    assert json.loads(body)["token"]
