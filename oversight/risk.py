"""Risk assessment of an order that asks for approval: a 0-100 score, a level and a priority.

The score is the sum of four bounded factors, each reported with its points and why, so an
operator sees what produced the number:

- ``notional_vs_budget`` (0-40): the order's notional as a share of the agent's budget;
- ``concentration`` (0-25): the position in that symbol after a buy, against the agent's
  ``max_position_fraction`` (a sell reduces exposure and scores 0);
- ``risk_tolerance`` (0-15): the agent's own declared appetite (0-10);
- ``volatility`` (0-20): how volatile the symbol is in the simulated market.

Levels: < 25 low, < 50 medium, < 75 high, else critical. The review priority follows the level
(critical → urgent) and is at least ``high`` when two approvers are needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from oversight.choices import Priority, RiskLevel

if TYPE_CHECKING:
    from agents.models import Agent
    from trades.models import Trade

# Relative daily volatility of the simulated symbols (points out of 20); unknown symbols are
# scored as moderately volatile rather than safe.
SYMBOL_VOLATILITY_POINTS = {
    "AAPL": 8,
    "MSFT": 7,
    "GOOGL": 10,
    "AMZN": 11,
    "TSLA": 20,
}
DEFAULT_VOLATILITY_POINTS = 12

NOTIONAL_MAX_POINTS = 40
CONCENTRATION_MAX_POINTS = 25
TOLERANCE_MAX_POINTS = 15
VOLATILITY_MAX_POINTS = 20

_LEVELS = ((25, RiskLevel.LOW), (50, RiskLevel.MEDIUM), (75, RiskLevel.HIGH))
_PRIORITY_BY_LEVEL = {
    RiskLevel.LOW: Priority.LOW,
    RiskLevel.MEDIUM: Priority.MEDIUM,
    RiskLevel.HIGH: Priority.HIGH,
    RiskLevel.CRITICAL: Priority.URGENT,
}
_PRIORITY_ORDER = [Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.URGENT]


@dataclass(frozen=True)
class Risk:
    """A risk score 0-100, its level and the factors (name, points, detail) that produced it."""

    score: int
    level: str
    factors: list[dict] = field(default_factory=list)


def _bounded(points: Decimal | int, maximum: int) -> int:
    return int(max(0, min(Decimal(points), Decimal(maximum))).to_integral_value())


def risk_level(score: int) -> str:
    for bound, level in _LEVELS:
        if score < bound:
            return level
    return RiskLevel.CRITICAL


def assess_trade_risk(
    *, agent: Agent, trade: Trade, notional: Decimal, held_value: Decimal = Decimal("0")
) -> Risk:
    """Score an order. ``held_value`` is the cost of the position already held in the symbol."""
    config = agent.effective_config
    budget = Decimal(agent.budget) or Decimal("1")
    factors = []

    share = Decimal(notional) / budget
    # 1 point per 1 % of the budget: an order of 40 % of the budget or more scores the maximum.
    notional_points = _bounded(share * 100, NOTIONAL_MAX_POINTS)
    factors.append(
        {
            "factor": "notional_vs_budget",
            "points": notional_points,
            "detail": f"notional {notional} is {share:.1%} of the budget {agent.budget}",
        }
    )

    if trade.side == "buy":
        limit_fraction = Decimal(str(config["max_position_fraction"])) or Decimal("1")
        exposure = (Decimal(held_value) + Decimal(notional)) / budget
        used = exposure / limit_fraction
        concentration_points = _bounded(used * CONCENTRATION_MAX_POINTS, CONCENTRATION_MAX_POINTS)
        detail = (
            f"{trade.symbol} position after the order is {exposure:.1%} of the budget "
            f"(limit {limit_fraction:.0%})"
        )
    else:
        concentration_points = 0
        detail = "a sell reduces exposure"
    factors.append({"factor": "concentration", "points": concentration_points, "detail": detail})

    tolerance = int(agent.risk_tolerance)
    tolerance_points = _bounded(
        Decimal(tolerance) * TOLERANCE_MAX_POINTS / 10, TOLERANCE_MAX_POINTS
    )
    factors.append(
        {
            "factor": "risk_tolerance",
            "points": tolerance_points,
            "detail": f"agent risk tolerance {tolerance}/10",
        }
    )

    volatility_points = SYMBOL_VOLATILITY_POINTS.get(trade.symbol, DEFAULT_VOLATILITY_POINTS)
    factors.append(
        {
            "factor": "volatility",
            "points": volatility_points,
            "detail": f"{trade.symbol} volatility {volatility_points}/{VOLATILITY_MAX_POINTS}",
        }
    )

    score = min(sum(f["points"] for f in factors), 100)
    return Risk(score=score, level=risk_level(score), factors=factors)


def review_priority(*, risk: Risk, approvals_required: int) -> str:
    """Priority of the human review: from the risk level, at least high for a quorum of two."""
    priority = _PRIORITY_BY_LEVEL[RiskLevel(risk.level)]
    if approvals_required >= 2 and _PRIORITY_ORDER.index(priority) < 2:
        priority = Priority.HIGH
    return str(priority)
