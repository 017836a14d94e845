"""The bounded, persisted buffer of each agent's live events, for resuming by ``seq``."""

from __future__ import annotations

from django.db import models


class AgentEventBatch(models.Model):
    """The live events one transaction published on an agent's streams, kept so a client can
    catch up by ``seq``.

    One row per transaction, not per event: an order's ``trade.created``, ``trade.filled``
    and ``portfolio.update`` are stored by one single-row INSERT. ``events`` holds them in
    ``seq`` order, ``{"seq", "event", "channel", "data"}`` each, numbered ``first_seq`` to
    ``last_seq`` with no gap; batches of one agent never overlap. Read them through
    ``realtime.selectors``, which unpacks them into events.
    """

    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="event_batches"
    )
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    events = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["agent", "last_seq"]
        verbose_name_plural = "agent event batches"
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "last_seq"], name="agent_event_batch_unique_last_seq"
            ),
            models.CheckConstraint(
                condition=models.Q(first_seq__lte=models.F("last_seq")),
                name="agent_event_batch_seq_range",
            ),
        ]

    def __str__(self) -> str:
        if self.first_seq == self.last_seq:
            return f"{self.agent_id}#{self.last_seq}"
        return f"{self.agent_id}#{self.first_seq}-{self.last_seq}"

    @property
    def event_names(self) -> str:
        return ", ".join(event["event"] for event in self.events)
