from django.urls import path

from trades.api import views

urlpatterns = [
    path("agents/<uuid:agent_id>/trades", views.AgentTradesView.as_view(), name="trade-list"),
    path(
        "agents/<uuid:agent_id>/trades/<uuid:trade_id>",
        views.TradeDetailView.as_view(),
        name="trade-detail",
    ),
    path("market/prices", views.MarketPriceListView.as_view(), name="market-prices"),
    path(
        "market/prices/<str:symbol>",
        views.MarketPriceDetailView.as_view(),
        name="market-price",
    ),
]
