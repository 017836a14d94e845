"""The local usage ledger, which is also the outbox towards the metering service.

A usage event is written in the same transaction as the business change it meters, then
delivered by ``metering.services`` with ``IngestEventBatch``; ``transaction_id`` makes the
delivery idempotent, so retries never double count.

``transaction_id`` is the id on the wire, in one of two namespaces that cannot meet: the
server's own events are ``server:…`` (``metering.services.server_transaction_id``), a client's
are ``client:<agent id>:<the client's id>``. A client can therefore never take an id the server
will write, nor see or block another agent's: the server's writes to the outbox cannot fail on
a duplicate, and a business change (the kill switch, a fill, an approval) never fails on one.
"""

from __future__ import annotations

from django.db import models


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    # The metering service refused the event as invalid: retrying cannot help.
    REJECTED = "rejected"


class UsageEvent(models.Model):
    """One metered unit of usage: what, how much, for which agent, and its delivery state."""

    # The id sent to the metering service: server:… or client:<agent id>:<client id>.
    transaction_id = models.CharField(max_length=128, unique=True)
    # The id a client gave (or was given) on POST /metering/events, unique per agent; null for
    # the server's own events.
    client_transaction_id = models.CharField(max_length=64, null=True, blank=True, db_default=None)
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="usage_events")
    # Lower-case Creto UsageEventType name (api_call, llm_inference, …, oversight_request).
    event_type = models.CharField(max_length=32, default="api_call")
    # Metric code: api_calls, trade_executions, trade_volume, oversight_requests, or a custom one.
    code = models.CharField(max_length=64, db_index=True)
    quantity = models.BigIntegerField()
    symbol = models.CharField(max_length=16, blank=True, default="")
    properties = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(db_index=True)
    # The outbox's state of the event. A new row's comes from the database's defaults: an
    # INSERT of new events names only the columns of the event itself.
    delivery_state = models.CharField(
        max_length=10, choices=DeliveryState.choices, db_default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(db_default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_default=None)
    delivered_at = models.DateTimeField(null=True, blank=True, db_default=None)
    # accepted / duplicate as answered by the metering service.
    ingest_status = models.CharField(max_length=20, blank=True, db_default="")
    last_error = models.TextField(blank=True, db_default="")

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "client_transaction_id"],
                condition=models.Q(client_transaction_id__isnull=False),
                name="usage_client_id_unique_per_agent",
            )
        ]
        indexes = [
            models.Index(fields=["agent", "code", "occurred_at"]),
            models.Index(fields=["delivery_state", "next_attempt_at"]),
            # What every order asks (metering.services.pending_usage): the agent's undelivered
            # usage of a metric. Only the few rows still in the outbox are in it, so the
            # question costs the same after a day of delivered usage as after a minute.
            models.Index(
                fields=["agent", "code", "occurred_at"],
                condition=models.Q(delivery_state=DeliveryState.PENDING),
                name="usage_pending_by_agent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.quantity} ({self.delivery_state})"
