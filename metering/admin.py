"""Admin screen for the usage outbox: what was metered and whether it reached the service.

Read-only: delivery is ``metering.services.usage_deliver_pending``'s job (``manage.py
deliver_usage`` or the serving process's background job), never a hand edit.
"""

from __future__ import annotations

from django.contrib import admin

from agents.admin import ReadOnlyAdmin
from metering.models import UsageEvent


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = (
        "transaction_id",
        "client_transaction_id",
        "agent",
        "code",
        "event_type",
        "quantity",
        "symbol",
        "occurred_at",
        "delivery_state",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "ingest_status",
    )
    list_filter = ("delivery_state", "code", "event_type", "ingest_status")
    search_fields = (
        "transaction_id",
        "client_transaction_id",
        "agent__name",
        "agent__id",
        "code",
        "symbol",
    )
    list_select_related = ("agent",)
    ordering = ("-occurred_at",)
    date_hierarchy = "occurred_at"
