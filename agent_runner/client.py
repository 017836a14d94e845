"""The REST side of the runner: requests paced under the server's limits, retried safely.

Every request of the runner spends from one ``RequestBudget``, a token bucket sized under the
server's per-client request limit (``RATE_LIMIT``, 100 per 15 minutes by default), so the
runner keeps a margin for the people using the same server from the same address. A 429
``rate-limited`` answer stops every request for its ``Retry-After``.

Retries: a 502/503/504 or a network failure is retried with exponential backoff (honouring
``Retry-After``), for orders too, because every order carries an ``Idempotency-Key``: the
server answers a repeated key with the first answer and creates nothing new.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx2

logger = logging.getLogger("trading_demo.runner")

# The runner's default request budget: at most 20 + 65 = 85 requests in any 15 minutes, under
# the server's default RATE_LIMIT (100/15m) with room for a person using the same address.
DEFAULT_RATE = "65/15m"
DEFAULT_BURST = 20
RETRY_STATUSES = {502, 503, 504}
MAX_ATTEMPTS = 5
MAX_BACKOFF_SECONDS = 30.0


def parse_rate(text: str) -> tuple[int, float]:
    """``"70/15m"`` → (70, 900.0): a count per period of s, m, h or d."""
    try:
        count, period = text.strip().split("/")
        unit = period[-1]
        multiplier = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        amount = float(period[:-1] or 1)
        result = int(count), amount * multiplier
    except (ValueError, KeyError, IndexError):
        raise ValueError(
            f"a rate looks like '70/15m' (count/period in s, m, h or d): {text!r}"
        ) from None
    if result[0] < 1 or result[1] <= 0:
        raise ValueError(f"a rate must be positive: {text!r}")
    return result


class RequestBudget:
    """A token bucket: ``burst`` requests at once, refilled at ``count`` per ``period``.

    In any window of one ``period`` it allows at most ``burst + count`` requests, so
    ``burst + count`` below the server's limit keeps every request of the runner under it.
    """

    def __init__(self, count: int, period: float, burst: int, *, clock=time.monotonic):
        self.rate = count / period
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.updated = clock()
        self.blocked_until = 0.0

    def _refill(self) -> float:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return now

    def try_take(self, count: int = 1) -> bool:
        """Spend ``count`` requests now if the bucket holds them (and no 429 blocks)."""
        now = self._refill()
        if now < self.blocked_until or self.tokens < count:
            return False
        self.tokens -= count
        return True

    def wait_seconds(self, count: int = 1) -> float:
        now = self._refill()
        missing = max(0.0, count - self.tokens) / self.rate
        return max(missing, self.blocked_until - now, 0.0)

    async def take(self) -> None:
        """Spend one request, waiting for it if need be."""
        while not self.try_take():
            await asyncio.sleep(max(0.05, self.wait_seconds()))

    def refund(self, count: int = 1) -> None:
        self.tokens = min(self.capacity, self.tokens + count)

    def block_for(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self.clock() + seconds)


@dataclass
class Answer:
    """One HTTP answer: status, decoded JSON body (or None) and headers."""

    status: int
    body: Any
    headers: httpx2.Headers = field(default_factory=httpx2.Headers)

    @property
    def problem(self) -> str:
        """The RFC 7807 problem's slug (``quota-exceeded``…), or ``""``."""
        if isinstance(self.body, dict) and isinstance(self.body.get("type"), str):
            return self.body["type"].rstrip("/").rsplit("/", 1)[-1]
        return ""

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or self.body.get("title") or "")
        return ""

    @property
    def retry_after(self) -> float:
        try:
            return max(1.0, float(self.headers.get("Retry-After", "1")))
        except ValueError:
            return 1.0

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"


@dataclass
class Stats:
    """What the server answered the runner, by status (``None``: no answer at all)."""

    statuses: Counter = field(default_factory=Counter)
    requests: int = 0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status and status >= 500)


class ApiClient:
    """The REST API of one server for one owner's token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        budget: RequestBudget,
        stats: Stats,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ):
        self.budget = budget
        self.stats = stats
        self.http = httpx2.AsyncClient(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Token {token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        paid: bool = False,
    ) -> Answer:
        """Send a request (``paid``: its budget was already spent), retrying 502/503/504 and
        network failures with backoff. Returns the last answer; a request that never got one
        raises ``httpx2.TransportError``."""
        delay = 1.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not paid or attempt > 1:
                await self.budget.take()
            self.stats.requests += 1
            try:
                response = await self.http.request(
                    method, path, json=json, params=params, headers=headers
                )
            except httpx2.TransportError as error:
                self.stats.statuses[None] += 1
                if attempt == MAX_ATTEMPTS:
                    raise
                logger.warning("%s %s: %s; retrying in %.0f s", method, path, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            self.stats.statuses[response.status_code] += 1
            try:
                body = response.json() if response.content else None
            except ValueError:
                body = None
            answer = Answer(response.status_code, body, response.headers)
            if answer.status == 429 and answer.problem != "quota-exceeded":
                # Over the request limit: nobody in this runner asks again before it resets.
                self.budget.block_for(answer.retry_after)
                logger.warning("request limit reached: pausing requests %.0f s", answer.retry_after)
            if answer.status in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
                wait = max(delay, answer.retry_after if "Retry-After" in answer.headers else 0)
                wait = min(wait, MAX_BACKOFF_SECONDS)
                logger.warning(
                    "%s %s: %s %s; retrying in %.0f s",
                    method,
                    path,
                    answer.status,
                    answer.detail,
                    wait,
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the routes the runner uses ---------------------------------------------------------

    async def agents(self) -> list[dict]:
        """Every agent this token may see (all pages)."""
        found: list[dict] = []
        page = 1
        while True:
            answer = await self.call("GET", "/agents", params={"page_size": 200, "page": page})
            if answer.status != 200:
                raise ApiError(answer, "listing the agents")
            found += answer.body["results"]
            if not answer.body.get("next"):
                return found
            page += 1

    async def agent(self, agent_id: str) -> Answer:
        return await self.call("GET", f"/agents/{agent_id}")

    async def portfolio(self, agent_id: str) -> Answer:
        return await self.call("GET", f"/agents/{agent_id}/portfolio")

    async def open_orders(self, agent_id: str) -> list[dict]:
        """The agent's orders that are open or wait for approval (newest 200 orders)."""
        answer = await self.call("GET", f"/agents/{agent_id}/trades", params={"page_size": 200})
        if answer.status != 200:
            raise ApiError(answer, "listing the orders")
        return [t for t in answer.body["results"] if t["status"] in OPEN_STATUSES]

    async def place_order(self, agent_id: str, body: dict, *, key: str, paid: bool) -> Answer:
        return await self.call(
            "POST",
            f"/agents/{agent_id}/trades",
            json=body,
            headers={"Idempotency-Key": key},
            paid=paid,
        )

    async def cancel_order(self, agent_id: str, trade_id: str, *, paid: bool) -> Answer:
        return await self.call("DELETE", f"/agents/{agent_id}/trades/{trade_id}", paid=paid)


OPEN_STATUSES = ("open", "pending_approval")


class ApiError(Exception):
    """A request the runner cannot do without (a listing, a read) did not succeed."""

    def __init__(self, answer: Answer, doing: str):
        super().__init__(f"{doing}: HTTP {answer.status} {answer.problem} {answer.detail}".strip())
        self.answer = answer
