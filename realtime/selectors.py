"""Reads of the event buffer, for resuming a subscription by ``seq``."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Q

from agents.models import Agent
from realtime.models import AgentEvent
from realtime.services import CONTROL_EVENTS


def agent_events_since(
    *, agent_id: UUID | str, channel: str, since_seq: int, limit: int | None = None
) -> list[AgentEvent]:
    """The agent's buffered events of ``channel`` (plus control events) after ``since_seq``,
    in ``seq`` order."""
    queryset = (
        AgentEvent.objects.filter(agent_id=agent_id, seq__gt=since_seq)
        .filter(Q(channel=channel) | Q(event__in=CONTROL_EVENTS))
        .order_by("seq")
    )
    return list(queryset[:limit] if limit else queryset)


def agent_event_oldest_seq(*, agent_id: UUID | str) -> int:
    """The oldest ``seq`` still buffered for the agent, over all its channels.

    With nothing buffered, the seq the agent's next event will get: everything before it is
    gone (or never existed).
    """
    oldest = (
        AgentEvent.objects.filter(agent_id=agent_id)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    if oldest is not None:
        return oldest
    last = Agent.objects.filter(pk=agent_id).values_list("event_seq", flat=True).first()
    return (last or 0) + 1


def agent_event_latest_seq(*, agent_id: UUID | str) -> int:
    """The last ``seq`` handed to one of the agent's committed events (0 before the first)."""
    last = Agent.objects.filter(pk=agent_id).values_list("event_seq", flat=True).first()
    return last or 0
