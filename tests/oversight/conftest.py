"""Fixtures of the oversight tests: a second operator for quorums and races."""

from __future__ import annotations

import pytest


@pytest.fixture
def second_operator(user_factory):
    return user_factory(username="operator2", operator=True)
