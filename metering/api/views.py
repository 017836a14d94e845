"""Metering routes (SPEC §5): an agent's usage and quotas, and client-reported usage events."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from api.schema import PROBLEM
from metering.api.serializers import (
    QuotaListSerializer,
    UsageEventAcceptedSerializer,
    UsageEventInputSerializer,
    UsageQuerySerializer,
    UsageSerializer,
)
from metering.selectors import quota_status_for, usage_summary
from metering.services import usage_event_submit


def _agent_for(request, agent_id):
    from agents.selectors import agent_get_for

    return agent_get_for(user=request.user, agent_id=agent_id)


class AgentUsageView(APIView):
    """Usage of one agent in the current day, week or month, from the local ledger."""

    @extend_schema(
        parameters=[
            OpenApiParameter("period", str, enum=["daily", "weekly", "monthly"], required=False)
        ],
        responses={200: UsageSerializer, 400: PROBLEM, 404: PROBLEM},
    )
    def get(self, request, agent_id):
        agent = _agent_for(request, agent_id)
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        summary = usage_summary(agent=agent, period=query.validated_data["period"])
        return Response(UsageSerializer(summary).data)


class AgentQuotaView(APIView):
    """The agent's quotas as the metering service counts them (503 when it is down), and the
    server's own daily trade control as the order path counts it."""

    @extend_schema(responses={200: QuotaListSerializer, 404: PROBLEM, 503: PROBLEM})
    def get(self, request, agent_id):
        from trades.selectors import daily_trades_for

        agent = _agent_for(request, agent_id)
        quotas = quota_status_for(agent=agent)
        quotas["daily_trades"] = daily_trades_for(agent=agent, now=timezone.now())
        return Response(QuotaListSerializer(quotas).data)


class UsageEventCreateView(APIView):
    """Record a usage event for one of your agents; idempotent on ``transaction_id``."""

    @extend_schema(
        request=UsageEventInputSerializer,
        responses={202: UsageEventAcceptedSerializer, 400: PROBLEM, 404: PROBLEM},
    )
    def post(self, request):
        payload = UsageEventInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        agent = _agent_for(request, data["agent_id"])
        outcome = usage_event_submit(
            agent=agent,
            event_type=data["event_type"],
            code=data["code"],
            quantity=data["quantity"],
            transaction_id=data.get("transaction_id"),
            properties=data.get("properties"),
            timestamp=data.get("timestamp"),
        )
        body = {"transaction_id": outcome.transaction_id, "status": outcome.status}
        return Response(UsageEventAcceptedSerializer(body).data, status=status.HTTP_202_ACCEPTED)
