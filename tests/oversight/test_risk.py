"""The risk score of an order asking for approval, and the review priority derived from it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oversight.risk import Risk, assess_trade_risk, review_priority, risk_level
from trades.models import Trade

pytestmark = pytest.mark.django_db


def _trade(symbol="AAPL", side="buy", quantity="100") -> Trade:
    return Trade(symbol=symbol, side=side, quantity=Decimal(quantity))


def _points(risk: Risk) -> dict[str, int]:
    return {f["factor"]: f["points"] for f in risk.factors}


def test_a_bigger_order_of_a_riskier_agent_in_a_volatile_symbol_scores_higher(agent_factory):
    calm = agent_factory(risk_tolerance=1)
    bold = agent_factory(risk_tolerance=10)

    small = assess_trade_risk(agent=calm, trade=_trade("MSFT"), notional=Decimal("11000"))
    large = assess_trade_risk(agent=bold, trade=_trade("TSLA"), notional=Decimal("29000"))

    assert small.score < large.score
    assert _points(small)["notional_vs_budget"] == 11
    assert _points(large)["notional_vs_budget"] == 29
    assert _points(small)["volatility"] < _points(large)["volatility"]
    assert _points(small)["risk_tolerance"] < _points(large)["risk_tolerance"]
    # 29 % of the budget against a 30 % position limit: close to the maximum
    assert _points(large)["concentration"] == 24
    assert large.level in {"high", "critical"}


def test_a_sell_adds_no_concentration(agent_factory):
    agent = agent_factory()
    risk = assess_trade_risk(agent=agent, trade=_trade(side="sell"), notional=Decimal("20000"))
    assert _points(risk)["concentration"] == 0


def test_scores_are_bounded_and_every_factor_explains_itself(agent_factory):
    agent = agent_factory(budget="1000", risk_tolerance=10)
    risk = assess_trade_risk(agent=agent, trade=_trade("TSLA"), notional=Decimal("1000000"))
    assert risk.score == 100
    assert risk.level == "critical"
    assert all(f["detail"] for f in risk.factors)


@pytest.mark.parametrize(
    ("score", "level"), [(0, "low"), (24, "low"), (25, "medium"), (50, "high"), (75, "critical")]
)
def test_levels(score, level):
    assert risk_level(score) == level


def test_priority_follows_the_level_and_a_quorum_is_at_least_high():
    assert review_priority(risk=Risk(10, "low"), approvals_required=1) == "low"
    assert review_priority(risk=Risk(10, "low"), approvals_required=2) == "high"
    assert review_priority(risk=Risk(60, "high"), approvals_required=1) == "high"
    assert review_priority(risk=Risk(90, "critical"), approvals_required=1) == "urgent"
