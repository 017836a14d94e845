"""Admin screen for the agents' live-event buffer (what a resubscribing client replays)."""

from __future__ import annotations

from django.contrib import admin

from agents.admin import ReadOnlyAdmin
from realtime.models import AgentEventBatch


@admin.register(AgentEventBatch)
class AgentEventBatchAdmin(ReadOnlyAdmin):
    list_display = ("agent", "first_seq", "last_seq", "event_names", "created_at")
    search_fields = ("agent__name", "agent__id")
    list_select_related = ("agent",)
    ordering = ("-created_at", "-last_seq")
    date_hierarchy = "created_at"
