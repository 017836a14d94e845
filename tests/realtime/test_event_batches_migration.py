"""The migration to one buffer row per transaction carries the buffered events over, so a
client resuming across the upgrade still replays what it missed."""

from __future__ import annotations

import pytest

from tests.helpers import buffered_events, migrate_to

BEFORE = [("realtime", "0001_initial")]
AFTER = [("realtime", "0002_event_batches")]


@pytest.mark.django_db(transaction=True)
def test_the_buffered_events_are_carried_over(make_agent):
    # given: the buffer of one row per event, holding two events of an agent
    agent = make_agent()
    old = migrate_to(BEFORE).loader.project_state(BEFORE).apps
    try:
        OldEvent = old.get_model("realtime", "AgentEvent")
        OldEvent.objects.create(
            agent_id=agent.pk, seq=1, event="trade.created", channel="trades", data={"n": 1}
        )
        OldEvent.objects.create(
            agent_id=agent.pk, seq=2, event="portfolio.update", channel="portfolio", data={}
        )
    finally:
        # when: the migration runs (and, whatever happened above, the schema is current again)
        migrate_to(AFTER)

    # then: both are buffered still, in seq order, as they were
    assert [(e.seq, e.event, e.channel, e.data) for e in buffered_events(agent)] == [
        (1, "trade.created", "trades", {"n": 1}),
        (2, "portfolio.update", "portfolio", {}),
    ]
