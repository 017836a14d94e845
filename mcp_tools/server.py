"""The MCP server: the trading API of SPEC §5 as tools, for LLM-driven agents.

**One path for the rules.** Every tool is one (``wait_for_order``: two) request of the REST API,
served in process by Django's own request handling (``mcp_tools.dispatch``) with the caller's
API token and address. Calling the service functions directly would have meant re-applying,
by hand and forever in step, what the middleware and DRF do around them: token
authentication, the per-IP and per-user rate limits, the body limit, ``api_calls`` metering,
the visibility rules (another owner's agent is 404) and the problem+json rendering. Through
the request path a tool call is governed exactly as the same REST request: the same
validation, quotas, oversight, rate limits, idempotency (``client_order_id``), metering and live
events, and the same refusals.

**Results** are the API's JSON, unchanged, as text and as structured content (objects).
A refusal is a tool error (``is_error``) whose text says the problem's title, status and
detail in words, then the problem document, with ``retry_after`` (the ``Retry-After``
seconds) added when the API sent one; the structured content is that document. An order
waiting for a human decision says so in words first: which oversight request it is and that
``wait_for_order`` waits for the outcome.

Arguments are typed: values outside an enum (side, type, time in force, period) are refused
by the tool's input schema before any request is made; everything else (known symbol,
prices a type needs, quantity > 0, funds, position limits) is the API's validation.
"""

import asyncio
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import quote
from uuid import UUID

from asgiref.sync import sync_to_async
from django.db import connection
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from agents.choices import AgentStatus
from mcp_tools.dispatch import Answer, Caller, api_request
from trades.choices import FINAL_STATUSES, OrderType, Side, TimeInForce, TradeStatus

SERVER_NAME = "trading-demo"
INSTRUCTIONS = (
    "Trade with your agents on the Trading Demo server. Every call is governed exactly like the "
    "REST API: quotas, rate limits, oversight and the kill switch apply, and every call is "
    "metered. Orders at or above an agent's approval threshold wait for a human operator: "
    "place_order then says so, and wait_for_order waits for the decision. Money and "
    "quantities are decimal strings."
)
# How often wait_for_order looks at the order's status, and the longest wait one call allows.
WAIT_POLL_SECONDS = 0.5
WAIT_MAX_SECONDS = 300

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)

AgentId = Annotated[UUID, Field(description="The agent's id (list_agents shows your agents).")]
OrderId = Annotated[
    UUID, Field(description="The order's id, as place_order or list_orders returned it.")
]
Symbol = Annotated[str, Field(description="A market symbol, e.g. AAPL (get_market lists them).")]
Page = Annotated[int | None, Field(ge=1, description="Page number (1 = newest).")]
PageSize = Annotated[int | None, Field(ge=1, le=200, description="Items per page (max 200).")]
Money = Annotated[
    Decimal | None, Field(description='A price, as a decimal string (e.g. "150.00").')
]


def _choices(values) -> Any:
    """``Literal`` of a model's choices: the schema's enum is the API's own list."""
    return Literal[tuple(values)]


SideChoice = _choices(Side.values)
TypeChoice = _choices(OrderType.values)
TimeInForceChoice = _choices(TimeInForce.values)
TradeStatusChoice = _choices(TradeStatus.values)
AgentStatusChoice = _choices(AgentStatus.values)


def _text(value: Any) -> TextContent:
    return TextContent(type="text", text=value if isinstance(value, str) else json.dumps(value))


def refusal(answer: Answer) -> CallToolResult:
    """The API's problem document as a tool error, its essentials first in words."""
    problem = dict(answer.body) if isinstance(answer.body, dict) else {"status": answer.status}
    retry_after = answer.headers.get("Retry-After")
    if retry_after is not None and retry_after.isdigit():
        problem["retry_after"] = int(retry_after)
    words = f"Refused: {problem.get('title', 'Error')} ({answer.status})."
    if problem.get("detail"):
        words += f" {problem['detail']}"
    if "required" in problem and "available" in problem:
        words += f" Required {problem['required']}, available {problem['available']}."
    if "retry_after" in problem:
        words += f" Retry after {problem['retry_after']} seconds."
    return CallToolResult(
        content=[_text(words), _text(problem)], structured_content=problem, is_error=True
    )


def result(answer: Answer, note: str | None = None) -> CallToolResult:
    """The API's JSON as the tool's result (a refusal if the API refused)."""
    if not answer.ok:
        return refusal(answer)
    content = [_text(note)] if note else []
    content.append(_text(answer.body))
    structured = answer.body if isinstance(answer.body, dict) else None
    return CallToolResult(content=content, structured_content=structured)


def order_note(order: dict) -> str | None:
    """Words for an order that is not done yet: who or what it waits for, and how to wait."""
    wait = f'wait_for_order(agent_id="{order["agent_id"]}", order_id="{order["id"]}")'
    if order.get("status") == TradeStatus.PENDING_APPROVAL:
        return (
            "This order needs a human decision: a human operator must approve it before it "
            f"executes. It waits as oversight request {order['approval_request_id']} "
            f"(status pending_approval, notional {order.get('notional')}); nothing more is "
            f"needed to submit it. To wait for the operator's decision, call {wait}: it "
            "returns the order once it is filled, rejected, expired or cancelled."
        )
    if order.get("status") == TradeStatus.OPEN:
        return (
            "This order rests open until the market price reaches it. To wait for it to fill, "
            f"call {wait}."
        )
    return None


def order_result(answer: Answer) -> CallToolResult:
    note = order_note(answer.body) if answer.ok and isinstance(answer.body, dict) else None
    return result(answer, note)


def _order_status(agent_id: UUID, order_id: UUID) -> str | None:
    """The order's status as stored, for waiting between the two requests of wait_for_order."""
    from trades.models import Trade

    try:
        return (
            Trade.objects.filter(pk=order_id, agent_id=agent_id)
            .values_list("status", flat=True)
            .first()
        )
    finally:
        # A worker thread outside any request: give the connection back now.
        connection.close()


order_status = sync_to_async(_order_status, thread_sensitive=False)


def build_server(caller: Caller | None = None, *, caller_of_request=None) -> MCPServer:
    """The tools, for one fixed ``caller`` (stdio) or the caller of each HTTP request.

    ``caller_of_request`` maps the transport's request (``ctx.request_context.request``) to
    a ``Caller``; exactly one of the two is given.
    """
    if (caller is None) == (caller_of_request is None):
        raise ValueError("give either a caller or caller_of_request")
    who: Callable[[Context], Caller] = (
        (lambda ctx: caller)
        if caller is not None
        else (lambda ctx: caller_of_request(ctx.request_context.request))
    )
    server = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS)

    async def call(ctx: Context, method: str, path: str, **kwargs) -> Answer:
        return await api_request(who(ctx), method, path, **kwargs)

    @server.tool(annotations=READ)
    async def list_agents(
        ctx: Context,
        status: Annotated[
            AgentStatusChoice | None,
            Field(description="Only agents in this status."),
        ] = None,
        page: Page = None,
        page_size: PageSize = None,
    ) -> CallToolResult:
        """Your agents, newest first: ``{count, next, previous, results: [agent]}`` (GET
        /api/v1/agents). An agent: id, name, status, budget, cash_balance, reserved_cash,
        available_cash, config (auto_approval_limit, daily_trade_limit, ...)."""
        query = {"status": status, "page": page, "page_size": page_size}
        return result(await call(ctx, "GET", "/agents", query=query))

    @server.tool(annotations=READ)
    async def get_agent(ctx: Context, agent_id: AgentId) -> CallToolResult:
        """One of your agents (GET /api/v1/agents/{id}): status, cash, limits (config)."""
        return result(await call(ctx, "GET", f"/agents/{agent_id}"))

    @server.tool(annotations=READ)
    async def get_portfolio(ctx: Context, agent_id: AgentId) -> CallToolResult:
        """The agent's portfolio (GET /api/v1/agents/{id}/portfolio): cash_balance,
        reserved_cash, available_cash, positions (symbol, quantity, avg_price, current_price,
        market_value, unrealized_pnl), total_value, realized and unrealized P&L."""
        return result(await call(ctx, "GET", f"/agents/{agent_id}/portfolio"))

    @server.tool(annotations=READ)
    async def get_market(
        ctx: Context,
        symbol: Annotated[
            str | None, Field(description="One symbol; leave empty for every symbol.")
        ] = None,
    ) -> CallToolResult:
        """Current simulated prices: ``[{symbol, price, timestamp}]`` for every symbol (GET
        /api/v1/market/prices), or one ``{symbol, price, timestamp}`` (unknown symbol: not
        found)."""
        if symbol:
            return result(await call(ctx, "GET", f"/market/prices/{quote(symbol, safe='')}"))
        return result(await call(ctx, "GET", "/market/prices"))

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, open_world_hint=True))
    async def place_order(
        ctx: Context,
        agent_id: AgentId,
        symbol: Symbol,
        side: Annotated[SideChoice, Field(description="buy or sell.")],
        quantity: Annotated[
            Decimal, Field(description='How many shares, a decimal string (e.g. "10").')
        ],
        type: Annotated[
            TypeChoice,
            Field(
                description="market (fills now at the current price), limit (needs "
                "limit_price), stop (needs stop_price) or stop_limit (needs both)."
            ),
        ] = "market",
        limit_price: Money = None,
        stop_price: Money = None,
        time_in_force: Annotated[
            TimeInForceChoice,
            Field(
                description="day (expires at the end of the simulated day), gtc, ioc or fok "
                "(cancelled if it cannot fill at once)."
            ),
        ] = "day",
        client_order_id: Annotated[
            str | None,
            Field(
                max_length=64,
                description="Your id for the order: placing it again with the same id and "
                "the same fields returns the first answer and places nothing (idempotency).",
            ),
        ] = None,
        strategy: Annotated[str | None, Field(description="Why: the strategy's name.")] = None,
        confidence: Annotated[
            float | None, Field(ge=0, le=1, description="Your confidence, 0 to 1.")
        ] = None,
        rationale: Annotated[
            str | None, Field(description="Why: in words, shown to the operator.")
        ] = None,
    ) -> CallToolResult:
        """Place an order for the agent (POST /api/v1/agents/{id}/trades); returns the order.

        Governed like the REST request: the agent must be active; the daily trade limit and
        the metering quota apply (refused with the seconds to wait); a buy must fit the
        available cash (it is reserved); orders at or above the agent's approval threshold
        wait for a human operator: the result then says so, names the oversight request, and
        ``wait_for_order`` waits for the decision. Order statuses: pending_approval, open,
        filled, cancelled, rejected, expired, failed."""
        body: dict[str, Any] = {
            "symbol": symbol,
            "side": side,
            "type": type,
            "quantity": str(quantity),
            "time_in_force": time_in_force,
        }
        if limit_price is not None:
            body["limit_price"] = str(limit_price)
        if stop_price is not None:
            body["stop_price"] = str(stop_price)
        if client_order_id is not None:
            body["client_order_id"] = client_order_id
        metadata = {"strategy": strategy, "confidence": confidence, "rationale": rationale}
        metadata = {key: value for key, value in metadata.items() if value is not None}
        if metadata:
            body["metadata"] = metadata
        return order_result(await call(ctx, "POST", f"/agents/{agent_id}/trades", body=body))

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=False))
    async def cancel_order(ctx: Context, agent_id: AgentId, order_id: OrderId) -> CallToolResult:
        """Cancel an order that is pending approval or open (DELETE
        /api/v1/agents/{id}/trades/{order_id}); returns the cancelled order. A filled,
        rejected or already cancelled order is refused (conflict)."""
        return result(await call(ctx, "DELETE", f"/agents/{agent_id}/trades/{order_id}"))

    @server.tool(annotations=READ)
    async def get_order(ctx: Context, agent_id: AgentId, order_id: OrderId) -> CallToolResult:
        """One order of the agent (GET /api/v1/agents/{id}/trades/{order_id})."""
        return order_result(await call(ctx, "GET", f"/agents/{agent_id}/trades/{order_id}"))

    @server.tool(annotations=READ)
    async def list_orders(
        ctx: Context,
        agent_id: AgentId,
        status: Annotated[
            TradeStatusChoice | None, Field(description="Only orders in this status.")
        ] = None,
        symbol: Annotated[str | None, Field(description="Only orders of this symbol.")] = None,
        side: Annotated[SideChoice | None, Field(description="Only buys or sells.")] = None,
        page: Page = None,
        page_size: PageSize = None,
    ) -> CallToolResult:
        """The agent's orders, newest first: ``{count, next, previous, results: [order]}``
        (GET /api/v1/agents/{id}/trades)."""
        query = {
            "status": status,
            "symbol": symbol,
            "side": side,
            "page": page,
            "page_size": page_size,
        }
        return result(await call(ctx, "GET", f"/agents/{agent_id}/trades", query=query))

    @server.tool(annotations=READ)
    async def get_usage(
        ctx: Context,
        agent_id: AgentId,
        period: Annotated[
            Literal["daily", "weekly", "monthly"], Field(description="The period to sum.")
        ] = "daily",
    ) -> CallToolResult:
        """The agent's metered usage in the current period (GET
        /api/v1/metering/agents/{id}/usage): api_calls, trades, trade_volume,
        oversight_requests and a breakdown by event type and symbol."""
        path = f"/metering/agents/{agent_id}/usage"
        return result(await call(ctx, "GET", path, query={"period": period}))

    @server.tool(annotations=READ)
    async def get_quota(ctx: Context, agent_id: AgentId) -> CallToolResult:
        """The agent's quotas (GET /api/v1/metering/agents/{id}/quota): for each metric
        (api_calls, trade_executions) the limit, used, remaining and the period's end; and
        daily_trades, the server's own daily_trade_limit: orders today, remaining, resets_at."""
        return result(await call(ctx, "GET", f"/metering/agents/{agent_id}/quota"))

    @server.tool(annotations=READ)
    async def wait_for_order(
        ctx: Context,
        agent_id: AgentId,
        order_id: OrderId,
        timeout_seconds: Annotated[
            float,
            Field(
                gt=0,
                le=WAIT_MAX_SECONDS,
                description=f"How long to wait at most (seconds, up to {WAIT_MAX_SECONDS}).",
            ),
        ] = 60,
    ) -> CallToolResult:
        """Wait until the order leaves pending_approval or open, up to ``timeout_seconds``,
        and return it (filled, cancelled, rejected, expired or failed). If the time runs out
        first, returns the order as it is, with a note; call again to keep waiting.

        Two API requests: the order is read (GET .../trades/{order_id}) at the start, which
        refuses an order that is not yours, and again once it is done or the time is up."""
        path = f"/agents/{agent_id}/trades/{order_id}"
        first = await call(ctx, "GET", path)
        if not first.ok or first.body.get("status") in FINAL_STATUSES:
            return result(first)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(min(WAIT_POLL_SECONDS, max(deadline - time.monotonic(), 0)))
            status = await order_status(agent_id, order_id)
            if status in FINAL_STATUSES:
                break
        final = await call(ctx, "GET", path)
        if final.ok and final.body.get("status") not in FINAL_STATUSES:
            still = f"The order is still {final.body['status']} after {timeout_seconds:g} s. " + (
                order_note(final.body) or ""
            )
            return result(final, still)
        return result(final)

    return server
