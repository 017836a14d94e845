"""The dashboard's first paint: what the signed-in user may see, as the REST API shows it.

Everything here is the JSON of the REST API (same serializers), so the page script handles
the first paint and the live events that follow (whose ``data`` is that same JSON) alike.
"""

from __future__ import annotations

from django.conf import settings

# The page subscribes to two live channels per agent shown; an operator with thousands of
# agents sees the most recently created ones (the admin lists them all).
AGENT_LIMIT = 12
TRADE_LIMIT = 25
APPROVAL_LIMIT = 50


def dashboard_state(user) -> dict:
    """Agents (with portfolios), recent trades, pending approvals (operators) and prices."""
    from agents.api.serializers import AgentSerializer, PortfolioSerializer
    from agents.permissions import is_operator
    from agents.selectors import agent_queryset_for, portfolio_for
    from oversight.api.serializers import ApprovalRequestSerializer
    from oversight.choices import RequestStatus
    from oversight.selectors import approval_queryset_for
    from trades.api.serializers import MarketPriceSerializer, TradeSerializer
    from trades.market import all_prices
    from trades.models import Trade

    operator = is_operator(user)
    visible = agent_queryset_for(user)
    agents = list(visible.order_by("-created_at")[:AGENT_LIMIT])
    trades = (
        Trade.objects.filter(agent__in=agents)
        .select_related("approval_request")
        .order_by("-created_at")[:TRADE_LIMIT]
    )
    approvals = []
    if operator:
        approvals = (
            approval_queryset_for(user)
            .filter(status=RequestStatus.PENDING)
            .select_related("trade__approval_request", "agent__owner")
            .prefetch_related("decisions__approver")
            .order_by("created_at")[:APPROVAL_LIMIT]
        )
    return {
        "user": {"username": user.get_username(), "operator": operator, "id": user.pk},
        "agent_total": visible.count(),
        "agents": [
            {
                **AgentSerializer(agent).data,
                # The page resumes its live streams from here (no event is lost in between).
                "event_seq": agent.event_seq,
                "portfolio": PortfolioSerializer(portfolio_for(agent)).data,
            }
            for agent in agents
        ],
        "trades": TradeSerializer(trades, many=True).data,
        "approvals": [
            {
                **ApprovalRequestSerializer(approval).data,
                "agent_name": approval.agent.name,
                "owner": approval.agent.owner.get_username(),
                "order": TradeSerializer(approval.trade).data,
            }
            for approval in approvals
        ],
        "prices": MarketPriceSerializer(all_prices(), many=True).data,
        "symbols": settings.MARKET_SYMBOLS,
    }
