"""Agent routes of SPEC §5. Each view reads through a selector or calls one service."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import selectors, services
from agents.api.filters import AgentFilter
from agents.api.serializers import (
    AgentCreateSerializer,
    AgentSerializer,
    AgentUpdateSerializer,
    HistoryQuerySerializer,
    PortfolioPointSerializer,
    PortfolioSerializer,
)
from api.schema import PROBLEM
from trades import selectors as trade_selectors
from trades import services as trade_services


class AgentListCreateView(generics.ListAPIView):
    """``GET /agents`` (own agents; operators: all) and ``POST /agents``."""

    serializer_class = AgentSerializer
    filterset_class = AgentFilter
    ordering_fields = ["created_at", "name", "budget"]
    ordering = ["-created_at"]

    def get_queryset(self):
        return selectors.agent_queryset_for(self.request.user)

    @extend_schema(request=AgentCreateSerializer, responses={201: AgentSerializer, 403: PROBLEM})
    def post(self, request):
        payload = AgentCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        agent = services.agent_create(
            owner=request.user, actor=request.user, **payload.validated_data
        )
        return Response(AgentSerializer(agent).data, status=status.HTTP_201_CREATED)


class AgentDetailView(APIView):
    """``GET``, ``PATCH`` (name, config, active↔paused) and ``DELETE`` (kill switch)."""

    serializer_class = AgentSerializer

    def get(self, request, agent_id):
        agent = selectors.agent_get_for(user=request.user, agent_id=agent_id)
        return Response(AgentSerializer(agent).data)

    @extend_schema(
        request=AgentUpdateSerializer,
        responses={200: AgentSerializer, 403: PROBLEM, 409: PROBLEM},
    )
    def patch(self, request, agent_id):
        agent = selectors.agent_get_for(user=request.user, agent_id=agent_id)
        payload = AgentUpdateSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        agent = services.agent_update(agent=agent, actor=request.user, **payload.validated_data)
        return Response(AgentSerializer(agent).data)

    @extend_schema(responses={204: None})
    def delete(self, request, agent_id):
        agent = selectors.agent_get_for(user=request.user, agent_id=agent_id)
        trade_services.agent_terminate(agent=agent, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PortfolioView(APIView):
    """``GET /agents/{id}/portfolio``: cash, positions at current prices, P&L."""

    serializer_class = PortfolioSerializer

    def get(self, request, agent_id):
        agent = selectors.agent_get_for(user=request.user, agent_id=agent_id)
        return Response(PortfolioSerializer(trade_selectors.portfolio_for(agent)).data)


class PortfolioHistoryView(APIView):
    """``GET /agents/{id}/portfolio/history?days=``: valuation snapshots, oldest first."""

    serializer_class = PortfolioPointSerializer

    @extend_schema(
        parameters=[HistoryQuerySerializer], responses=PortfolioPointSerializer(many=True)
    )
    def get(self, request, agent_id):
        agent = selectors.agent_get_for(user=request.user, agent_id=agent_id)
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        points = selectors.portfolio_history(agent, days=query.validated_data["days"])
        return Response(PortfolioPointSerializer(points, many=True).data)
