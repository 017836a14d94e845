"""The migration that moves the ``daily_trade_limit`` count onto the agent row starts it at the
orders each agent already had accepted that UTC day, so an upgrade in the middle of a day
gives no agent its whole limit again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agents.models import Agent
from tests.helpers import migrate_to

BEFORE = [("agents", "0003_agent_limit_changes")]
# The trades as they stood then: the migration counts their rows.
TRADES = [("trades", "0001_initial")]
AFTER = [("agents", "0004_agent_daily_trade_count")]


@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_orders_each_agent_accepted_today(owner):
    # given: the schema before the count, an agent with two orders today and one yesterday,
    # and an agent with none today
    old = migrate_to(BEFORE).loader.project_state(BEFORE + TRADES).apps
    try:
        OldAgent, OldTrade = old.get_model("agents", "Agent"), old.get_model("trades", "Trade")

        def agent(name):
            money = Decimal("10000")
            return OldAgent.objects.create(
                owner_id=owner.pk, name=name, budget=money, cash_balance=money
            )

        def order(agent, created_at):
            trade = OldTrade.objects.create(
                agent=agent, symbol="AAPL", side="buy", quantity=Decimal("1"), status="filled"
            )
            OldTrade.objects.filter(pk=trade.pk).update(created_at=created_at)

        now = datetime.now(UTC)
        busy, idle = agent("Busy"), agent("Idle")
        order(busy, now)
        order(busy, now)
        order(busy, now - timedelta(days=1))
        order(idle, now - timedelta(days=1))
    finally:
        # when: the migration runs (and, whatever happened above, the schema is current again)
        migrate_to(AFTER)

    # then: each agent's count is its orders of today
    today = now.date()
    assert Agent.objects.get(pk=busy.pk).trades_on(today) == 2
    assert Agent.objects.get(pk=idle.pk).trades_on(today) == 0
