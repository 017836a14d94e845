"""Whether the benchmark's books balance: run by ``bench/run.py`` after the load, once the
server's processes have stopped, against the benchmark database. Prints JSON.

For every agent: ``cash_balance + Σ position.cost_basis == budget + realized_pnl``, its
reserved cash equals the reservations of its open orders and lies within its cash; every
position's quantity is what its fills bought less what they sold; every filled order's fills
add up to its quantity, and no order is left in a state between decision and fill.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.db.models import Count, Sum  # noqa: E402

from agents.models import Agent  # noqa: E402
from trades.choices import OPEN_STATUSES, TradeStatus  # noqa: E402
from trades.models import Fill, Trade  # noqa: E402

ZERO = Decimal("0")


def main() -> None:
    problems: list[str] = []
    agents = list(Agent.objects.all())
    for agent in agents:
        cost = agent.positions.aggregate(total=Sum("cost_basis"))["total"] or ZERO
        if agent.cash_balance + cost != agent.budget + agent.realized_pnl:
            problems.append(
                f"{agent.pk}: cash {agent.cash_balance} + cost basis {cost} != budget "
                f"{agent.budget} + realized {agent.realized_pnl}"
            )
        reserved = (
            Trade.objects.filter(agent=agent, status__in=OPEN_STATUSES).aggregate(
                total=Sum("reserved_amount")
            )["total"]
            or ZERO
        )
        if agent.reserved_cash != reserved or not ZERO <= agent.reserved_cash <= agent.cash_balance:
            problems.append(
                f"{agent.pk}: reserved cash {agent.reserved_cash}, open orders reserve {reserved}"
            )
    held: dict[tuple, Decimal] = defaultdict(lambda: ZERO)
    for agent_id, symbol, side, quantity in Fill.objects.values_list(
        "trade__agent_id", "trade__symbol", "trade__side", "quantity"
    ):
        held[(agent_id, symbol)] += quantity if side == "buy" else -quantity
    for agent in agents:
        for position in agent.positions.all():
            if position.quantity != held.get((agent.pk, position.symbol), ZERO):
                problems.append(
                    f"{agent.pk} {position.symbol}: holds {position.quantity}, fills give "
                    f"{held.get((agent.pk, position.symbol), ZERO)}"
                )
    filled = Trade.objects.filter(status=TradeStatus.FILLED).annotate(filled=Sum("fills__quantity"))
    unfilled = [t.pk for t in filled if t.filled != t.quantity or t.filled_quantity != t.quantity]
    if unfilled:
        problems.append(
            f"{len(unfilled)} filled orders whose fills do not add up, e.g. {unfilled[0]}"
        )
    statuses = dict(Trade.objects.values_list("status").annotate(n=Count("id")))
    print(
        json.dumps(
            {
                "balanced": not problems,
                "agents": len(agents),
                "orders": sum(statuses.values()),
                "orders_by_status": statuses,
                "fills": Fill.objects.count(),
                "problems": problems[:10],
                "problem_count": len(problems),
            }
        )
    )


if __name__ == "__main__":
    main()
