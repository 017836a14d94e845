from django.urls import path

from metering.api.views import AgentQuotaView, AgentUsageView, UsageEventCreateView

urlpatterns = [
    path("metering/agents/<uuid:agent_id>/usage", AgentUsageView.as_view(), name="metering-usage"),
    path("metering/agents/<uuid:agent_id>/quota", AgentQuotaView.as_view(), name="metering-quota"),
    path("metering/events", UsageEventCreateView.as_view(), name="metering-events"),
]
