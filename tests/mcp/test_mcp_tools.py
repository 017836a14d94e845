"""The trading API as MCP tools, driven with the ``mcp`` SDK's own client over both transports.

A live server (``manage.py serve`` on a SQLite database of its own, the session's reference
gRPC services) serves REST, WebSockets and streamable HTTP at ``/mcp``; the stdio transport is
``manage.py mcp`` spawned by the SDK's stdio client on the same database. Each test runs once
per transport: what an LLM agent sees through either must be what the REST API answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from tests.realtime.servers import (
    BASE_DIR,
    PYTHON,
    ServerProcess,
    manage,
    server_env,
    ws_open,
    ws_receive,
    ws_request,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TOOLS = {
    "list_agents",
    "get_agent",
    "get_portfolio",
    "get_market",
    "place_order",
    "cancel_order",
    "get_order",
    "list_orders",
    "get_usage",
    "get_quota",
    "wait_for_order",
}

SETUP = """
import json
from django.conf import settings
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token
tokens = {}
for name in ("owner", "other", "operator"):
    user = User.objects.create_user(name, password="pw-" + name)
    if name == "operator":
        user.groups.add(Group.objects.get_or_create(name=settings.OPERATORS_GROUP)[0])
    tokens[name] = Token.objects.create(user=user).key
print(json.dumps(tokens))
"""


@dataclass
class Live:
    server: ServerProcess
    env: dict[str, str]
    tokens: dict[str, str]

    def rest(self, who: str, method: str, path: str, body=None) -> tuple[int, dict | list]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.server.http}/api/v1{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Token {self.tokens[who]}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                content = response.read()
                return response.status, json.loads(content) if content else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def new_agent(self, who: str = "owner", **config) -> dict:
        status, agent = self.rest(
            who,
            "POST",
            "/agents",
            {"name": f"mcp-{uuid.uuid4().hex[:8]}", "budget": "100000", "config": config},
        )
        assert status == 201, agent
        return agent


@pytest.fixture(scope="module")
def live(tmp_path_factory, reference_services):
    database = tmp_path_factory.mktemp("mcp") / "mcp.db"
    env = server_env(
        reference_services,
        database_url=f"sqlite:///{database}",
        # With Redis, the stdio process and the server share the channel layer.
        redis_url=os.environ.get("REDIS_URL"),
    )

    manage("migrate", "--noinput", env=env)
    tokens = json.loads(manage("shell", "-c", SETUP, env=env).strip().splitlines()[-1])
    server = ServerProcess(
        [str(PYTHON), "manage.py", "serve", "--host", "127.0.0.1", "--port", "{port}"], env
    )
    try:
        server.wait_ready()
        yield Live(server=server, env=env, tokens=tokens)
    finally:
        server.stop()


@pytest.fixture(params=["http", "stdio"])
def transport(request) -> str:
    return request.param


@contextlib.asynccontextmanager
async def mcp_client(live: Live, transport: str, token: str, scheme: str = "Token"):
    """An initialized ``ClientSession`` of the SDK over ``transport``, as ``token``'s owner."""
    if transport == "http":
        headers = {"Authorization": f"{scheme} {token}"}
        async with (
            create_mcp_http_client(headers=headers) as http,
            streamable_http_client(f"{live.server.http}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
        return
    params = StdioServerParameters(
        command=str(PYTHON),
        args=["manage.py", "mcp"],
        env={**live.env, "TRADING_DEMO_TOKEN": token},
        cwd=BASE_DIR,
    )
    with tempfile.TemporaryFile(mode="w+") as errlog:
        try:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                yield session
        except BaseException:
            errlog.seek(0)
            print("manage.py mcp wrote on stderr:\n" + errlog.read()[-4000:])
            raise


async def call(session: ClientSession, tool: str, **arguments):
    return await session.call_tool(tool, arguments)


def order_args(agent: dict, quantity: str = "2", **extra) -> dict:
    return {"agent_id": agent["id"], "symbol": "AAPL", "side": "buy", "quantity": quantity} | extra


def texts(result) -> str:
    return "\n".join(block.text for block in result.content)


async def test_the_tools_are_listed_with_documented_typed_parameters(live, transport):
    async with mcp_client(live, transport, live.tokens["owner"]) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    place = tools["place_order"]
    assert "human operator" in place.description
    properties = place.input_schema["properties"]
    assert set(place.input_schema["required"]) == {"agent_id", "symbol", "side", "quantity"}
    assert properties["side"]["enum"] == ["buy", "sell"]
    assert properties["agent_id"]["format"] == "uuid"
    assert all(properties[name].get("description") for name in properties)


async def test_an_order_fills_and_reads_back_in_the_apis_own_shape(live, transport):
    agent = live.new_agent()
    async with mcp_client(live, transport, live.tokens["owner"]) as session:
        placed = await call(session, "place_order", **order_args(agent, client_order_id="c-1"))
        again = await call(session, "place_order", **order_args(agent, client_order_id="c-1"))
        portfolio = await call(session, "get_portfolio", agent_id=agent["id"])
    assert not placed.is_error, texts(placed)
    order = placed.structured_content
    assert order["status"] == "filled"
    # the result is the REST API's JSON for the same order
    status, over_rest = live.rest("owner", "GET", f"/agents/{agent['id']}/trades/{order['id']}")
    assert status == 200 and over_rest == order == json.loads(placed.content[-1].text)
    # placing it again with the same client_order_id is the first answer, nothing new
    assert again.structured_content == order
    _, orders = live.rest("owner", "GET", f"/agents/{agent['id']}/trades")
    assert orders["count"] == 1
    positions = portfolio.structured_content["positions"]
    assert [(p["symbol"], p["quantity"]) for p in positions] == [("AAPL", order["quantity"])]


async def test_an_order_above_the_approval_limit_waits_for_an_operator(live, transport):
    agent = live.new_agent()
    async with mcp_client(live, transport, live.tokens["owner"]) as session:
        placed = await call(session, "place_order", **order_args(agent, quantity="60"))
        order = placed.structured_content
        # the agent is told in words that a human must decide, which request, how to wait
        assert not placed.is_error and order["status"] == "pending_approval", texts(placed)
        words = placed.content[0].text
        assert "human operator must approve" in words
        assert order["approval_request_id"] in words and "wait_for_order" in words
        # a wait that runs out returns the order as it is, and says so
        short = await call(
            session, "wait_for_order", agent_id=agent["id"], order_id=order["id"], timeout_seconds=1
        )
        assert not short.is_error and short.structured_content["status"] == "pending_approval"
        assert short.content[0].text.startswith("The order is still pending_approval after 1 s")
        waiting = asyncio.create_task(
            call(session, "wait_for_order", agent_id=agent["id"], order_id=order["id"])
        )
        await asyncio.sleep(1)
        assert not waiting.done()
        # an operator approves over REST
        status, decided = await asyncio.to_thread(
            live.rest,
            "operator",
            "POST",
            f"/oversight/requests/{order['approval_request_id']}/approve",
            {"reason": "fine"},
        )
        assert status == 200, decided
        final = await asyncio.wait_for(waiting, 30)
    assert not final.is_error, texts(final)
    assert final.structured_content["id"] == order["id"]
    assert final.structured_content["status"] == "filled"


async def test_the_daily_trade_limit_refuses_with_the_retry_time(live, transport):
    agent = live.new_agent(daily_trade_limit=1)
    async with mcp_client(live, transport, live.tokens["owner"]) as session:
        first = await call(session, "place_order", **order_args(agent))
        refused = await call(session, "place_order", **order_args(agent))
    assert not first.is_error, texts(first)
    assert refused.is_error
    problem = refused.structured_content
    assert problem["status"] == 429 and problem["title"] == "Quota Exceeded"
    assert problem["detail"] and problem["retry_after"] > 0
    assert f"Retry after {problem['retry_after']} seconds" in refused.content[0].text
    _, orders = live.rest("owner", "GET", f"/agents/{agent['id']}/trades")
    assert orders["count"] == 1


async def test_a_terminated_agents_order_is_refused(live, transport):
    agent = live.new_agent()
    status, _ = live.rest("owner", "DELETE", f"/agents/{agent['id']}")
    assert status == 204
    async with mcp_client(live, transport, live.tokens["owner"]) as session:
        refused = await call(session, "place_order", **order_args(agent))
    assert refused.is_error
    assert refused.structured_content["status"] == 409
    assert refused.structured_content["type"].endswith("agent-not-active/")
    _, orders = live.rest("owner", "GET", f"/agents/{agent['id']}/trades")
    assert orders["count"] == 0


async def test_another_owners_agent_is_not_found(live, transport):
    theirs = live.new_agent("other")
    async with mcp_client(live, transport, live.tokens["owner"]) as session:
        seen = await call(session, "get_agent", agent_id=theirs["id"])
        ordered = await call(session, "place_order", **order_args(theirs))
        listed = await call(session, "list_agents")
    for refused in (seen, ordered):
        assert refused.is_error
        assert refused.structured_content["status"] == 404
        assert theirs["name"] not in texts(refused)
    assert theirs["id"] not in {agent["id"] for agent in listed.structured_content["results"]}
    _, orders = live.rest("other", "GET", f"/agents/{theirs['id']}/trades")
    assert orders["count"] == 0


async def test_a_call_without_a_valid_token_is_refused(live, transport):
    if transport == "http":
        # the endpoint answers 401 with the API's problem document, before any MCP exchange
        for authorization in (None, "Token not-a-token", "Bearer not-a-token"):
            request = urllib.request.Request(  # noqa: S310 - loopback
                f"{live.server.http}/mcp",
                method="POST",
                data=b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}',
                headers={"Content-Type": "application/json", "Accept": "application/json"}
                | ({"Authorization": authorization} if authorization else {}),
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)  # noqa: S310
            assert refused.value.code == 401
            assert refused.value.headers["Content-Type"] == "application/problem+json"
            assert json.loads(refused.value.read())["title"] == "Unauthorized"
        # the SDK's client cannot even start a session: its initialize gets the error
        with pytest.RaisesGroup(
            pytest.RaisesExc(MCPError, match="error response"), flatten_subgroups=True
        ):
            async with mcp_client(live, transport, "not-a-token"):
                pytest.fail("a session was opened without a valid token")
    else:
        # over stdio every tool call is refused with the API's 401
        agent = live.new_agent()
        async with mcp_client(live, transport, "not-a-token") as session:
            refused = await call(session, "get_agent", agent_id=agent["id"])
        assert refused.is_error and refused.structured_content["status"] == 401
        assert refused.content[0].text.startswith("Refused: Unauthorized (401).")


def test_the_stdio_server_needs_a_token(live):
    env = {key: value for key, value in live.env.items() if key != "TRADING_DEMO_TOKEN"}
    done = subprocess.run(
        [str(PYTHON), "manage.py", "mcp"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "--token or $TRADING_DEMO_TOKEN" in done.stderr


async def test_a_bearer_token_is_accepted_over_http(live):
    agent = live.new_agent()
    async with mcp_client(live, "http", live.tokens["owner"], scheme="Bearer") as session:
        seen = await call(session, "get_agent", agent_id=agent["id"])
    assert not seen.is_error and seen.structured_content["id"] == agent["id"]


async def test_tool_calls_are_metered_as_the_same_rest_calls(live, transport):
    over_mcp, over_rest = live.new_agent(), live.new_agent()
    async with mcp_client(live, transport, live.tokens["owner"]) as session:
        placed = await call(session, "place_order", **order_args(over_mcp))
        for tool in ("get_agent", "get_portfolio", "list_orders", "get_quota"):
            assert not (await call(session, tool, agent_id=over_mcp["id"])).is_error
        order_id = placed.structured_content["id"]
        await call(session, "get_order", agent_id=over_mcp["id"], order_id=order_id)
    base = f"/agents/{over_rest['id']}"
    body = {key: value for key, value in order_args(over_rest).items() if key != "agent_id"}
    status, order = live.rest("owner", "POST", f"{base}/trades", body)
    assert status == 201, order
    for path in (base, f"{base}/portfolio", f"{base}/trades", f"/metering{base}/quota"):
        assert live.rest("owner", "GET", path)[0] == 200
    live.rest("owner", "GET", f"{base}/trades/{order['id']}")
    usage = {
        agent["id"]: live.rest("owner", "GET", f"/metering/agents/{agent['id']}/usage")[1]
        for agent in (over_mcp, over_rest)
    }
    assert usage[over_mcp["id"]]["api_calls"] == usage[over_rest["id"]]["api_calls"] == 6
    assert usage[over_mcp["id"]]["trades"] == usage[over_rest["id"]]["trades"] == 1


async def test_tool_calls_reach_the_live_streams(live, transport):
    if transport == "stdio" and not live.env.get("REDIS_URL"):
        pytest.skip("the stdio process shares the server's channel layer only through Redis")
    agent = live.new_agent()
    async with await ws_open(live.server, live.tokens["owner"]) as socket:
        subscribe = {"action": "subscribe", "channel": "trades", "agent_id": agent["id"]}
        assert (await ws_request(socket, subscribe))["type"] == "subscribed"
        async with mcp_client(live, transport, live.tokens["owner"]) as session:
            placed = await call(session, "place_order", **order_args(agent))
        events = []
        while "trade.filled" not in {event.get("event") for event in events}:
            events.append(await ws_receive(socket))
    order = placed.structured_content
    assert {event["data"]["id"] for event in events if event["type"] == "event"} == {order["id"]}
