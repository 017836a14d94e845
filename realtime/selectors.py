"""Reads of the event buffer, for resuming a subscription by ``seq``."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Q

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


def agent_event_oldest_buffered_seq(*, agent_id: UUID | str) -> int | None:
    """The oldest ``seq`` still buffered for the agent, over all its channels; ``None`` when
    nothing is (everything up to the agent's ``event_seq`` is gone, or never existed)."""
    return (
        AgentEvent.objects.filter(agent_id=agent_id)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
