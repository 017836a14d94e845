"""Fixtures of the order tests: a funded agent in a market at known prices."""

from __future__ import annotations

import pytest


@pytest.fixture
def agent(agent_factory, prices):
    return agent_factory(budget="100000")
