"""The dashboard's first paint: what the signed-in user may see, as the REST API shows it.

Everything here is the JSON of the REST API (same serializers), so the page script handles
the first paint and the live events that follow (whose ``data`` is that same JSON) alike.
"""

from __future__ import annotations

from datetime import UTC, datetime, time

from django.conf import settings
from django.utils import timezone

# The page subscribes to two live channels per agent shown; an operator with thousands of
# agents sees the most recently created ones (the admin lists them all).
AGENT_LIMIT = 12
TRADE_LIMIT = 25
APPROVAL_LIMIT = 50


def _until(resets_at: datetime) -> str:
    resets_at = resets_at.astimezone(UTC)
    if resets_at.time() == time(0, 0):
        return "midnight UTC"
    return f"{resets_at:%Y-%m-%d %H:%M} UTC"


def quota_alerts(agents: list[dict], *, now: datetime) -> list[dict]:
    """One plain sentence per quota that refuses an agent's orders now: its own daily trade
    limit reached (counted as the server counts it), or the metering service's latest refusal
    (``quota_refusal`` of the agent's entry)."""
    from metering.periods import DAILY, PERIOD_UNITS, period_window

    _, midnight = period_window(DAILY, now)
    alerts = []
    for agent in agents:
        name = agent["name"]
        if agent["orders_today"] >= agent["daily_trade_limit"]:
            alerts.append(
                {
                    "agent_id": str(agent["id"]),
                    "kind": "daily_trade_limit",
                    "text": f"{name}: daily trade limit of {agent['daily_trade_limit']} orders "
                    f"reached; orders refused (429) until {_until(midnight)}",
                }
            )
        refusal = agent["quota_refusal"]
        if refusal is not None:
            refused_at = datetime.fromisoformat(refusal["refused_at"]).astimezone(UTC)
            unit = PERIOD_UNITS.get(refusal["period"], refusal["period"])
            alerts.append(
                {
                    "agent_id": str(agent["id"]),
                    "kind": "metering_quota",
                    "text": f"{name}: the metering service refused an order at "
                    f"{refused_at:%H:%M} UTC, its {refusal['metric_code']} quota of "
                    f"{refusal['limit']} per {unit} being used up; orders refused (429) until "
                    f"{_until(datetime.fromisoformat(refusal['resets_at']))}",
                }
            )
    return alerts


def dashboard_state(user) -> dict:
    """Agents (with portfolios and today's orders against their quotas), recent trades,
    pending approvals (operators), prices, and an alert per quota that refuses orders now."""
    from agents.api.serializers import AgentSerializer, PortfolioSerializer
    from agents.permissions import is_operator
    from agents.selectors import agent_queryset_for
    from metering.selectors import quota_refusals_for
    from oversight.api.serializers import ApprovalRequestSerializer
    from oversight.choices import RequestStatus
    from oversight.selectors import approval_queryset_for
    from trades.api.serializers import MarketPriceSerializer, TradeSerializer
    from trades.market import all_prices
    from trades.models import Trade
    from trades.selectors import daily_trades_for, portfolio_for

    operator = is_operator(user)
    visible = agent_queryset_for(user)
    agents = list(visible.order_by("-created_at")[:AGENT_LIMIT])
    now = timezone.now()
    refusals = quota_refusals_for(agent_ids=[agent.pk for agent in agents])
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
    agent_rows = [
        {
            **AgentSerializer(agent).data,
            # The page resumes its live streams from here (no event is lost in between).
            "event_seq": agent.event_seq,
            "portfolio": PortfolioSerializer(portfolio_for(agent)).data,
            # As the order path counts and enforces it (read from the agent row).
            "orders_today": daily_trades_for(agent=agent, now=now).orders_today,
            "daily_trade_limit": int(agent.effective_config["daily_trade_limit"]),
            "quota_refusal": refusals.get(agent.pk),
        }
        for agent in agents
    ]
    return {
        "user": {"username": user.get_username(), "operator": operator, "id": user.pk},
        "agent_total": visible.count(),
        # The UTC day the orders were counted in: the page starts again from 0 the next day.
        "orders_day": now.astimezone(UTC).date().isoformat(),
        "agents": agent_rows,
        "quota_alerts": quota_alerts(agent_rows, now=now),
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
