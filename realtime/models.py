"""The bounded, persisted buffer of each agent's live events, for resuming by ``seq``."""

from __future__ import annotations

from django.db import models


class AgentEvent(models.Model):
    """An event published on an agent's streams, kept so a client can catch up by ``seq``."""

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    event = models.CharField(max_length=32)
    channel = models.CharField(max_length=16)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["agent", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "seq"], name="agent_event_unique_seq")
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}#{self.seq} {self.event}"
