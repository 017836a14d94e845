"""Drive agents by their strategy: decide on every tick, place orders, obey governance.

``Runner`` finds the agents of the given owners' tokens, follows the market and their events
over the WebSocket (``agent_runner.stream``), and runs one loop per agent that, once a tick,
asks its strategy for a ``Decision`` and carries it out over REST (``agent_runner.client``).

Governance, as any client must obey it:

* an order answered 202 waits for an operator: the runner records it and learns the outcome
  from the agent's events (``approval.completed``, ``trade.filled``…); it never resubmits it;
* 429 ``quota-exceeded``: the agent idles for ``Retry-After`` (its daily quota is used up);
  429 ``rate-limited``: every request waits for ``Retry-After``;
* 503 (and 502/504, network failures): the same request is retried with backoff; safe for
  orders because each carries an ``Idempotency-Key`` derived from the agent and the signal
  it answers, so neither a retry nor a restart that decides the same signal submits twice;
* ``agent.terminated`` (kill switch) or 409 ``agent-not-active`` for a terminated agent: the
  agent's loop ends before its next tick; a ``paused`` agent idles, its status re-read now and
  then, and trades again once resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

import httpx2

from agent_runner.client import OPEN_STATUSES, ApiClient, ApiError, RequestBudget, Stats
from agent_runner.stream import Stream
from strategies import Book, Decision, Market, OpenOrder, OrderIntent, Strategy, strategy_for

logger = logging.getLogger("trading_demo.runner")

HISTORY_LENGTH = 240
PAUSED_RECHECK_SECONDS = 60.0
D0 = Decimal(0)


def idempotency_key(agent_id: str, intent: OrderIntent) -> str:
    """The same agent answering the same signal with the same side and symbol: one key."""
    basis = f"{agent_id}|{intent.signal}|{intent.side}|{intent.symbol}"
    return "runner-" + hashlib.sha256(basis.encode()).hexdigest()[:40]


@dataclass
class Counts:
    placed: int = 0
    filled: int = 0
    awaiting_approval: int = 0
    refused: int = 0
    cancelled: int = 0
    errors: int = 0


@dataclass
class AgentState:
    """What the runner knows of one agent, kept current by its events."""

    id: str
    name: str
    strategy_name: str
    strategy: Strategy
    client: ApiClient
    budget: Decimal
    approval_threshold: Decimal
    max_position_value: Decimal
    allowed_symbols: list[str] | None
    status: str = "active"
    available_cash: Decimal = D0
    held: dict[str, Decimal] = field(default_factory=dict)
    portfolio_at: str = ""
    orders: dict[str, dict] = field(default_factory=dict)  # open or pending, by id
    filled_ids: set[str] = field(default_factory=set)
    buys_placed: int = 0
    quota_until: float = 0.0
    next_action_at: float = 0.0
    next_status_check: float = 0.0
    last_hold: str = ""
    counts: Counts = field(default_factory=Counts)

    @property
    def stopped(self) -> bool:
        return self.status in ("terminated", "suspended")

    @classmethod
    def from_json(cls, agent: dict, *, client: ApiClient) -> AgentState | None:
        """The state of an agent JSON (SPEC §5); None unless it has a built-in strategy."""
        config = agent.get("config") or {}
        strategy = strategy_for(agent["strategy"], config.get("strategy_params"))
        if strategy is None:
            return None
        budget = Decimal(agent["budget"])
        threshold = min(
            Decimal(str(config.get("auto_approval_limit", "10000"))),
            Decimal(str(config.get("approval_budget_fraction", "0.25"))) * budget,
        )
        return cls(
            id=agent["id"],
            name=agent["name"],
            strategy_name=agent["strategy"],
            strategy=strategy,
            client=client,
            budget=budget,
            approval_threshold=threshold,
            max_position_value=Decimal(str(config.get("max_position_fraction", "0.3"))) * budget,
            allowed_symbols=config.get("allowed_symbols"),
            status=agent["status"],
            available_cash=Decimal(agent["available_cash"]),
        )

    def apply_portfolio(self, portfolio: dict) -> None:
        """Take a portfolio JSON unless an already applied one is newer."""
        stamp = portfolio.get("updated_at") or ""
        if stamp and self.portfolio_at and stamp < self.portfolio_at:
            return
        self.portfolio_at = stamp
        self.available_cash = Decimal(portfolio["available_cash"])
        self.held = {
            p["symbol"]: plain(Decimal(p["quantity"]))
            for p in portfolio.get("positions", ())
            if Decimal(p["quantity"]) > 0
        }

    def apply_trade(self, trade: dict) -> str | None:
        """Track an order's status; returns ``"filled"`` the first time it is seen filled."""
        trade_id = trade["id"]
        if trade["status"] in OPEN_STATUSES:
            self.orders[trade_id] = trade
            return None
        self.orders.pop(trade_id, None)
        if trade["status"] == "filled" and trade_id not in self.filled_ids:
            self.filled_ids.add(trade_id)
            self.counts.filled += 1
            return "filled"
        return None

    def book(self, symbols: list[str]) -> Book:
        open_orders = [
            OpenOrder(
                id=t["id"],
                symbol=t["symbol"],
                side=t["side"],
                type=t["type"],
                quantity=plain(Decimal(t["quantity"]) - Decimal(t.get("filled_quantity") or 0)),
                limit_price=Decimal(t["limit_price"]) if t.get("limit_price") else None,
                status=t["status"],
            )
            for t in self.orders.values()
        ]
        selling: dict[str, Decimal] = {}
        for order in open_orders:
            if order.side == "sell":
                selling[order.symbol] = selling.get(order.symbol, D0) + order.quantity
        sellable = {s: q - selling.get(s, D0) for s, q in self.held.items()}
        allowed = [s for s in symbols if self.allowed_symbols is None or s in self.allowed_symbols]
        return Book(
            budget=self.budget,
            available_cash=self.available_cash,
            held=dict(self.held),
            sellable={s: q for s, q in sellable.items() if q > 0},
            open_orders=tuple(open_orders),
            approval_threshold=self.approval_threshold,
            max_position_value=self.max_position_value,
            symbols=allowed,
            buys_placed=self.buys_placed,
        )


class Runner:
    """Runs every agent of ``clients`` (one ``ApiClient`` per owner token) that has a built-in
    strategy and, if ``only`` is given, whose name or id is in it."""

    def __init__(
        self,
        *,
        base_url: str,
        tokens: list[str],
        budget: RequestBudget,
        only: set[str] | None = None,
        pace_seconds: float = 15.0,
        tick_seconds: float = 1.0,
        progress_seconds: float = 60.0,
        progress=None,
    ):
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.budget = budget
        self.stats = Stats()
        self.only = only
        self.pace_seconds = pace_seconds
        self.tick_seconds = tick_seconds
        self.progress_seconds = progress_seconds
        self.progress = progress or (lambda line: logger.info("%s", line))
        self.clients = [
            ApiClient(self.base_url, token, budget=budget, stats=self.stats) for token in tokens
        ]
        self.agents: dict[str, AgentState] = {}
        self.symbols: list[str] = []
        self.history: dict[str, deque[Decimal]] = {}
        self.last_seq: dict[str, int] = {}
        self.stop = asyncio.Event()
        self.started = time.monotonic()

    # --- setup ----------------------------------------------------------------------------

    async def discover(self) -> None:
        """Find the agents to drive (one listing per token). The market's symbols come with
        its first ticks."""
        for client in self.clients:
            for agent in await client.agents():
                if self.only and agent["id"] not in self.only and agent["name"] not in self.only:
                    continue
                if agent["id"] in self.agents:
                    continue
                try:
                    state = AgentState.from_json(agent, client=client)
                except ValueError as error:
                    logger.error("%s: bad strategy_params, not driven: %s", agent["name"], error)
                    continue
                if state is None:
                    continue
                if state.status == "terminated":
                    continue
                self.agents[state.id] = state

    async def load(self, agent: AgentState) -> None:
        """Read the agent's portfolio and open orders over REST (start, or after a gap)."""
        answer = await agent.client.portfolio(agent.id)
        if answer.status == 200:
            agent.apply_portfolio(answer.body)
        # Its resting quotes and the orders waiting for approval, so none is placed twice.
        try:
            for trade in await agent.client.open_orders(agent.id):
                agent.orders[trade["id"]] = trade
        except ApiError as error:
            logger.warning("%s: %s", agent.name, error)

    # --- the live feed --------------------------------------------------------------------

    def on_tick(self, symbol: str, price: str, seq: int) -> None:
        if seq <= self.last_seq.get(symbol, 0):
            return  # the same tick from another owner's connection
        if symbol not in self.history:
            self.history[symbol] = deque(maxlen=HISTORY_LENGTH)
            self.symbols.append(symbol)
        self.last_seq[symbol] = seq
        self.history[symbol].append(Decimal(price))

    async def on_event(self, agent_id: str, event: str, data: dict, seq: int) -> None:
        agent = self.agents.get(agent_id)
        if agent is None:
            return
        if event == "agent.terminated":
            agent.status = "terminated"
            logger.warning("%s: terminated by the kill switch; its loop stops", agent.name)
        elif event == "portfolio.update":
            agent.apply_portfolio(data)
        elif event.startswith("trade."):
            was_pending = agent.orders.get(data.get("id"), {}).get("status") == "pending_approval"
            if agent.apply_trade(data) == "filled":
                logger.info(
                    "%s: filled %s %s %s @ %s%s",
                    agent.name,
                    data["side"],
                    plain(Decimal(data["filled_quantity"])),
                    data["symbol"],
                    data["avg_fill_price"],
                    " (after approval)" if was_pending else "",
                )
        elif event == "approval.completed":
            logger.info(
                "%s: the operator's decision on order %s: %s",
                agent.name,
                data.get("trade_id"),
                data.get("status"),
            )
        elif event == "quota.warning":
            logger.warning(
                "%s: quota warning: %s at %s%%",
                agent.name,
                data.get("metric_code"),
                data.get("usage_percentage"),
            )

    async def on_gap(self, agent_id: str) -> None:
        agent = self.agents.get(agent_id)
        if agent is not None:
            await self.load(agent)

    # --- one agent ------------------------------------------------------------------------

    def market(self) -> Market:
        return Market(
            history={s: tuple(prices) for s, prices in self.history.items()},
            last_seq=dict(self.last_seq),
        )

    async def run_agent(self, agent: AgentState) -> None:
        logger.info(
            "%s: trading by %s %s", agent.name, agent.strategy_name, _params(agent.strategy)
        )
        while not self.stop.is_set() and not agent.stopped:
            await self._sleep(self.tick_seconds)
            if self.stop.is_set() or agent.stopped:
                break
            try:
                await self.step(agent)
            except (ApiError, httpx2.TransportError) as error:
                agent.counts.errors += 1
                logger.warning("%s: %s", agent.name, error)
                await self._sleep(5)
            except Exception as error:  # one agent's failure must not stop the others
                agent.counts.errors += 1
                logger.exception("%s: step failed: %s", agent.name, error)
                await self._sleep(5)
        if agent.stopped:
            logger.info("%s: stopped (%s)", agent.name, agent.status)

    async def step(self, agent: AgentState) -> None:
        """One tick of one agent: idle if paused or out of quota, else decide and act."""
        now = time.monotonic()
        if agent.status == "paused":
            if now >= agent.next_status_check:
                await self.refresh_status(agent)
            return
        if now < agent.quota_until or now < agent.next_action_at:
            return
        decision = agent.strategy.decide(self.market(), agent.book(self.symbols))
        if not decision.acts:
            if decision.reason != agent.last_hold:
                agent.last_hold = decision.reason
                logger.debug("%s: hold: %s", agent.name, decision.reason)
            return
        needed = len(decision.orders) + len(decision.cancels)
        if not self.budget.try_take(needed):
            logger.debug("%s: %s (waiting for the request budget)", agent.name, decision.reason)
            return
        await self.act(agent, decision)
        agent.next_action_at = time.monotonic() + self.pace_seconds

    async def act(self, agent: AgentState, decision: Decision) -> None:
        logger.info("%s: decided: %s", agent.name, decision.reason)
        for cancel in decision.cancels:
            if agent.stopped:
                return
            answer = await agent.client.cancel_order(agent.id, cancel.order_id, paid=True)
            if answer.status in (200, 404, 409):
                agent.orders.pop(cancel.order_id, None)
            if answer.status == 200:
                agent.counts.cancelled += 1
                logger.info("%s: cancelled %s: %s", agent.name, cancel.order_id, cancel.reason)
        for intent in decision.orders:
            if agent.stopped or agent.status == "paused" or self.stop.is_set():
                return  # the kill switch (or a pause) arrived meanwhile: place nothing more
            await self.submit(agent, intent)

    async def submit(self, agent: AgentState, intent: OrderIntent) -> None:
        body = {
            "symbol": intent.symbol,
            "side": intent.side,
            "type": intent.type,
            "quantity": str(intent.quantity),
            "metadata": {"strategy": agent.strategy_name, "rationale": intent.reason[:2000]},
        }
        if intent.limit_price is not None:
            body["limit_price"] = str(intent.limit_price)
        key = idempotency_key(agent.id, intent)
        answer = await agent.client.place_order(agent.id, body, key=key, paid=True)
        what = f"{intent.describe()} [{key[-8:]}]"
        again = " (replayed: placed before)" if answer.replayed else ""
        if answer.status in (201, 202):
            trade = answer.body
            if not answer.replayed:
                agent.counts.placed += 1
                if intent.side == "buy":
                    agent.buys_placed += 1
            agent.apply_trade(trade)
            if answer.status == 202:
                agent.counts.awaiting_approval += 0 if answer.replayed else 1
                logger.info(
                    "%s: %s waits for an operator's approval (request %s)%s",
                    agent.name,
                    what,
                    trade.get("approval_request_id"),
                    again,
                )
            else:
                logger.info("%s: %s → %s%s", agent.name, what, trade["status"], again)
            return
        problem = answer.problem
        if answer.status == 409 and problem == "agent-not-active":
            logger.info("%s: %s refused: the agent is not active", agent.name, what)
            await self.refresh_status(agent)
        elif answer.status == 409 and problem == "idempotency-conflict":
            logger.info("%s: %s was already placed under this signal", agent.name, what)
        elif answer.status == 429 and problem == "quota-exceeded":
            agent.quota_until = time.monotonic() + answer.retry_after
            agent.counts.refused += 1
            logger.warning(
                "%s: quota used up (%s); idle for %.0f s",
                agent.name,
                answer.detail,
                answer.retry_after,
            )
        elif answer.status >= 500:
            agent.counts.errors += 1
            logger.error("%s: %s failed: %s %s", agent.name, what, answer.status, answer.detail)
        else:
            agent.counts.refused += 1
            logger.info(
                "%s: %s refused: %s %s %s", agent.name, what, answer.status, problem, answer.detail
            )

    async def refresh_status(self, agent: AgentState) -> None:
        answer = await agent.client.agent(agent.id)
        agent.next_status_check = time.monotonic() + PAUSED_RECHECK_SECONDS
        if answer.status == 404:
            agent.status = "terminated"
            return
        if answer.status != 200:
            return
        status = answer.body["status"]
        if status != agent.status:
            logger.info("%s: now %s", agent.name, status)
        agent.status = status

    # --- the whole run --------------------------------------------------------------------

    async def run(self, duration: float | None = None) -> None:
        """Run until ``duration`` seconds pass (None: until ``stop`` is set)."""
        try:
            await self.discover()
            if not self.agents:
                logger.warning("no agent to drive (active, with a built-in strategy)")
                return
            streams = []
            for index, client in enumerate(self.clients):
                ids = [a.id for a in self.agents.values() if a.client is client]
                if not ids and index:
                    continue
                stream = Stream(
                    self.base_url,
                    self.tokens[index],
                    ids,
                    on_tick=self.on_tick,
                    on_event=self.on_event,
                    on_gap=self.on_gap,
                    label=f"owner #{index + 1}",
                )
                streams.append(stream)
            tasks = [asyncio.create_task(s.run(self.stop)) for s in streams]
            # Subscribed before reading the state, so no event falls in between.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in streams)), 15)
            for agent in self.agents.values():
                await self.load(agent)
            tasks += [asyncio.create_task(self.run_agent(a)) for a in self.agents.values()]
            tasks.append(asyncio.create_task(self._report()))
            if duration:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), duration)
            else:
                await self.stop.wait()
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.stop.set()
            for client in self.clients:
                await client.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _report(self) -> None:
        while not self.stop.is_set():
            await self._sleep(self.progress_seconds)
            if not self.stop.is_set():
                self.progress(self.progress_line())

    def progress_line(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        agents = list(self.agents.values())
        total = Counts()
        for agent in agents:
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(agent.counts, name))
        states = {
            "trading": sum(a.status == "active" for a in agents),
            "paused": sum(a.status == "paused" for a in agents),
            "stopped": sum(a.stopped for a in agents),
        }
        return (
            f"run_agents {elapsed // 60}m{elapsed % 60:02d}s: "
            + ", ".join(f"{n} {label}" for label, n in states.items())
            + f"; orders placed {total.placed} (filled {total.filled}, "
            f"approval asked {total.awaiting_approval}, refused {total.refused}, "
            f"cancelled {total.cancelled}); requests {self.stats.requests}, "
            f"server errors {self.stats.server_errors}"
        )

    def summary(self) -> dict:
        """Per agent counts and the server's answers, for the end of a run."""
        return {
            "requests": self.stats.requests,
            "statuses": {str(k): v for k, v in sorted(self.stats.statuses.items(), key=str)},
            "server_errors": self.stats.server_errors,
            "agents": {
                a.name: {"id": a.id, "strategy": a.strategy_name, "status": a.status}
                | vars(a.counts)
                for a in self.agents.values()
            },
        }


def plain(quantity: Decimal) -> Decimal:
    """``34.000000`` → ``34``; other quantities as they are (never in exponent form)."""
    whole = quantity.to_integral_value()
    return whole if whole == quantity else quantity


def _params(strategy: Strategy) -> str:
    shown = {k: str(v) if isinstance(v, Decimal) else v for k, v in strategy.params.items()}
    return str(shown)
