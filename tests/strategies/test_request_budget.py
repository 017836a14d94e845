"""The runner's request budget keeps every window of the server's limit under that limit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agent_runner.client import DEFAULT_BURST, DEFAULT_RATE, RequestBudget, parse_rate
from agent_runner.runner import idempotency_key
from strategies import OrderIntent


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_greedy_runner_stays_under_the_servers_default_limit_in_every_window():
    # given: the default budget asked for a request every second
    clock = Clock()
    budget = RequestBudget(*parse_rate(DEFAULT_RATE), DEFAULT_BURST, clock=clock)
    granted: list[float] = []
    for second in range(3 * 3600):
        clock.now = float(second)
        if budget.try_take():
            granted.append(clock.now)

    # then: no 15-minute window holds more than 85 (the server allows 100), and the runner
    # still uses the budget it has
    worst = max(
        sum(1 for t in granted if start <= t < start + 900) for start in range(0, 3 * 3600, 10)
    )
    assert worst <= 85
    assert len(granted) >= 3 * 4 * 65


def test_a_429_blocks_every_request_for_its_retry_after():
    clock = Clock()
    budget = RequestBudget(100, 60, 10, clock=clock)
    budget.block_for(30)
    assert not budget.try_take()
    assert budget.wait_seconds() == pytest.approx(30)
    clock.now = 30.0
    assert budget.try_take()


def test_rates_are_parsed_like_the_servers():
    assert parse_rate("70/15m") == (70, 900.0)
    assert parse_rate("5/s") == (5, 1.0)
    with pytest.raises(ValueError):
        parse_rate("lots")


def test_the_idempotency_key_names_the_agent_and_the_signal():
    buy = OrderIntent("AAPL", "buy", Decimal(3), "cross-up:AAPL:12", "why")
    same_signal_other_size = OrderIntent("AAPL", "buy", Decimal(5), "cross-up:AAPL:12", "other")
    assert idempotency_key("a1", buy) == idempotency_key("a1", same_signal_other_size)
    assert idempotency_key("a1", buy) != idempotency_key("a2", buy)
    later = OrderIntent("AAPL", "buy", Decimal(3), "cross-up:AAPL:40", "why")
    assert idempotency_key("a1", buy) != idempotency_key("a1", later)
    assert len(idempotency_key("a1", buy)) <= 64
