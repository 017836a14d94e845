from django.urls import path

from agents.api import views

urlpatterns = [
    path("agents", views.AgentListCreateView.as_view(), name="agent-list"),
    path("agents/<uuid:agent_id>", views.AgentDetailView.as_view(), name="agent-detail"),
    path("agents/<uuid:agent_id>/portfolio", views.PortfolioView.as_view(), name="agent-portfolio"),
    path(
        "agents/<uuid:agent_id>/portfolio/history",
        views.PortfolioHistoryView.as_view(),
        name="agent-portfolio-history",
    ),
]
