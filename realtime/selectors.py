"""Reads of the event buffer, for resuming a subscription by ``seq``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from realtime.models import AgentEventBatch
from realtime.services import CONTROL_EVENTS


@dataclass(frozen=True)
class BufferedEvent:
    """One event of an agent as the buffer keeps it."""

    agent_id: UUID
    seq: int
    event: str
    channel: str
    data: Any
    created_at: datetime


def _unpacked(batches) -> Iterator[BufferedEvent]:
    for batch in batches:
        for event in batch.events:
            yield BufferedEvent(
                agent_id=batch.agent_id,
                seq=event["seq"],
                event=event["event"],
                channel=event["channel"],
                data=event["data"],
                created_at=batch.created_at,
            )


def agent_events_buffered(*, agent_id: UUID | str) -> list[BufferedEvent]:
    """Every buffered event of the agent, of all its channels, in ``seq`` order."""
    return list(_unpacked(AgentEventBatch.objects.filter(agent_id=agent_id).order_by("last_seq")))


def agent_events_since(
    *, agent_id: UUID | str, channel: str, since_seq: int
) -> list[BufferedEvent]:
    """The agent's buffered events of ``channel`` (plus control events) after ``since_seq``,
    in ``seq`` order: the batches that end after ``since_seq``, unpacked."""
    batches = AgentEventBatch.objects.filter(agent_id=agent_id, last_seq__gt=since_seq)
    return [
        event
        for event in _unpacked(batches.order_by("last_seq"))
        if event.seq > since_seq and (event.channel == channel or event.event in CONTROL_EVENTS)
    ]


def agent_event_oldest_buffered_seq(*, agent_id: UUID | str) -> int | None:
    """The oldest ``seq`` still buffered for the agent, over all its channels; ``None`` when
    nothing is (everything up to the agent's ``event_seq`` is gone, or never existed)."""
    return (
        AgentEventBatch.objects.filter(agent_id=agent_id)
        .order_by("last_seq")
        .values_list("first_seq", flat=True)
        .first()
    )
