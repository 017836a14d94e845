"""The demo data set of ``manage.py seed_demo``: who logs in with what, and which agents exist.

Passwords are public on purpose (this is a demo; change or delete these users anywhere that
is not your laptop). ``demo_logins()`` is what the ``serve`` banner prints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

logger = logging.getLogger("trading_demo.demo")


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    operator: bool


@dataclass(frozen=True)
class DemoTrade:
    client_order_id: str
    symbol_index: int  # index into settings.MARKET_SYMBOLS (wraps), so any symbol list works
    side: str
    # Whole shares worth about this much at the price of the moment (at least one share).
    target_notional: Decimal


@dataclass(frozen=True)
class DemoAgent:
    owner: str
    name: str
    strategy: str
    budget: Decimal
    risk_tolerance: int
    trades: tuple[DemoTrade, ...] = ()
    # The agent's config: its governance limits and its strategy's parameters.
    config: dict | None = None


DEMO_USERS = (
    DemoUser("operator", "operator-demo-pass", operator=True),
    DemoUser("alice", "alice-demo-pass", operator=False),
    DemoUser("bob", "bob-demo-pass", operator=False),
)

# Every filled trade stays under both approval thresholds of the default policy (notional
# below 10,000 and below 25 % of the budget) so it executes at once; the order with client
# id PENDING_ORDER_ID is above them (one approval needed, below 100,000) and waits.
PENDING_ORDER_ID = "seed-pending-approval"

# `make run` drives these agents with `run_agents`, whose default request budget (65 per
# 15 minutes plus a burst of 20, shared by all the agents it drives) allows at most 6,260
# requests a day, each placing at most one order: a daily trade limit of 10,000 lets every agent
# trade all day even if it alone placed all of them. That budget is also under the owners'
# request limit (RATE_LIMIT, 100 per 15 minutes per user). The seed is an operator's tool, so it
# may set a limit above the owners' ceiling.
DEMO_DAILY_TRADE_LIMIT = 10_000
DEMO_AGENTS = (
    DemoAgent(
        "alice",
        "Alice Momentum",
        "momentum",
        Decimal("100000"),
        7,
        (
            DemoTrade("seed-am-1", 0, "buy", Decimal("5000")),
            DemoTrade("seed-am-2", 2, "buy", Decimal("4000")),
            DemoTrade(PENDING_ORDER_ID, 2, "buy", Decimal("15000")),
        ),
        # Every 6th buy is sized above the approval threshold, once the operator has decided
        # the one waiting (a strategy places no oversized buy while one of its agent waits).
        {"daily_trade_limit": DEMO_DAILY_TRADE_LIMIT, "strategy_params": {"oversize_every": 6}},
    ),
    DemoAgent(
        "alice",
        "Alice Mean Reversion",
        "mean_reversion",
        Decimal("50000"),
        4,
        (DemoTrade("seed-amr-1", 1, "buy", Decimal("3000")),),
        {"daily_trade_limit": DEMO_DAILY_TRADE_LIMIT, "strategy_params": {"k": "1.8"}},
    ),
    DemoAgent(
        "bob",
        "Bob Market Maker",
        "market_making",
        Decimal("250000"),
        5,
        (
            DemoTrade("seed-bmm-1", 3, "buy", Decimal("6000")),
            DemoTrade("seed-bmm-2", 4, "buy", Decimal("2000")),
        ),
        # Every 2nd bid is sized above the approval threshold while none of its own waits: its
        # first quotes, seconds after the start, put one in the approvals queue, and another
        # follows soon after the operator decides it.
        {
            "daily_trade_limit": DEMO_DAILY_TRADE_LIMIT,
            "strategy_params": {"spread": "0.002", "oversize_every": 2},
        },
    ),
    DemoAgent(
        "bob",
        "Bob Arbitrage",
        "arbitrage",
        Decimal("25000"),
        3,
        (DemoTrade("seed-ba-1", 2, "buy", Decimal("2000")),),
        {"daily_trade_limit": DEMO_DAILY_TRADE_LIMIT, "strategy_params": {"entry_z": "1.8"}},
    ),
)


def demo_logins() -> list[str]:
    """One line per seeded demo user that exists: ``username / password  token KEY``.

    Empty when the demo was not seeded. (Passwords are not verified here: checking a hash
    costs a deliberate fraction of a second each, too slow for a startup banner.)
    """
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    users = {
        user.username: user
        for user in get_user_model().objects.filter(
            username__in=[demo.username for demo in DEMO_USERS]
        )
    }
    tokens = dict(
        Token.objects.filter(user__in=users.values()).values_list("user__username", "key")
    )
    lines = []
    for demo in DEMO_USERS:
        user = users.get(demo.username)
        if user is None:
            continue
        role = "operator" if demo.operator else "owner"
        token = tokens.get(demo.username, "(no token)")
        lines.append(f"{demo.username} / {demo.password}  token {token}  ({role})")
    return lines


class DemoAgents:
    """``manage.py run_agents --demo-tokens`` as a child process of the server (``make run``).

    The runner is a client of the server like any other (REST and WebSocket at ``url``);
    running it as a separate process keeps the server free of any special case for it. It is
    started once the server listens and stopped with it.
    """

    def __init__(self, url: str):
        self.url = url
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from django.conf import settings

        manage = Path(settings.BASE_DIR) / "manage.py"
        command = [sys.executable, str(manage), "run_agents", "--demo-tokens", "--url", self.url]
        try:
            self.process = subprocess.Popen(command, env=os.environ.copy())  # noqa: S603
        except OSError:
            logger.exception("could not start the demo agents (run_agents)")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
