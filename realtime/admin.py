"""Admin screen for the agents' live-event buffer (what a resubscribing client replays)."""

from __future__ import annotations

from django.contrib import admin

from agents.admin import ReadOnlyAdmin
from realtime.models import AgentEvent


@admin.register(AgentEvent)
class AgentEventAdmin(ReadOnlyAdmin):
    list_display = ("agent", "seq", "event", "channel", "created_at")
    list_filter = ("channel", "event")
    search_fields = ("agent__name", "agent__id", "event")
    list_select_related = ("agent",)
    ordering = ("-created_at", "-seq")
    date_hierarchy = "created_at"
