"""Order and market routes of SPEC §5. Each view reads through a selector or calls one
service."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.selectors import agent_id_for
from api.limits import enforce_trade_rate
from api.schema import PROBLEM
from metering.services import api_call_usage
from trades import market, selectors, services
from trades.api.filters import TradeFilter
from trades.api.serializers import (
    MarketPriceSerializer,
    OrderInputSerializer,
    TradeSerializer,
    trade_rows,
)
from trades.models import Trade
from trades.representation import trade_representation

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Replaying a key with the same body returns the first answer.",
)


class AgentTradesView(generics.ListAPIView):
    """``GET /agents/{id}/trades`` (filters, newest first) and ``POST`` to place an order."""

    serializer_class = TradeSerializer
    filterset_class = TradeFilter
    ordering_fields = ["created_at", "symbol", "notional"]
    # No default ``ordering``: without ``?ordering=`` the selector's order stands (newest
    # first, then by id), so orders placed at the same instant keep one order on every page.

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no agent in the URL
            return Trade.objects.none()
        agent_id = agent_id_for(user=self.request.user, agent_id=self.kwargs["agent_id"])
        return selectors.trade_queryset_for(agent_id=agent_id)

    def list(self, request, *args, **kwargs):
        # A page reads the columns it shows as rows, not Trade instances; each row's JSON is
        # the serializer's (trade_representation).
        page = self.paginate_queryset(trade_rows(self.filter_queryset(self.get_queryset())))
        tz = timezone.get_current_timezone()
        return self.get_paginated_response(
            [
                trade_representation(row, approval_request_id=row.approval_request__id, tz=tz)
                for row in page
            ]
        )

    @extend_schema(
        request=OrderInputSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: TradeSerializer,
            202: TradeSerializer,
            402: PROBLEM,
            409: PROBLEM,
            422: PROBLEM,
            503: PROBLEM,
        },
    )
    def post(self, request, agent_id):
        enforce_trade_rate(request)
        outcome = services.trade_submit(
            agent_id=agent_id,
            user=request.user,
            data=request.data,
            idempotency_key=request.headers.get("Idempotency-Key"),
            api_call=api_call_usage(request),
        )
        response = Response(outcome.body, status=outcome.status_code)
        # Counted with the order's usage, in its transaction: the middleware skips it.
        response.api_call_recorded = not outcome.replayed
        if outcome.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class TradeDetailView(APIView):
    """``GET /agents/{id}/trades/{trade_id}`` and ``DELETE`` to cancel it."""

    serializer_class = TradeSerializer

    def get(self, request, agent_id, trade_id):
        trade = selectors.trade_get_for(user=request.user, agent_id=agent_id, trade_id=trade_id)
        return Response(TradeSerializer(trade).data)

    @extend_schema(responses={200: TradeSerializer, 409: PROBLEM})
    def delete(self, request, agent_id, trade_id):
        trade = selectors.trade_get_for(user=request.user, agent_id=agent_id, trade_id=trade_id)
        trade = services.trade_cancel(trade=trade, actor=request.user)
        return Response(TradeSerializer(trade).data)


class MarketPriceListView(APIView):
    """``GET /market/prices``: every symbol's current price."""

    serializer_class = MarketPriceSerializer

    @extend_schema(responses=MarketPriceSerializer(many=True))
    def get(self, request):
        return Response(MarketPriceSerializer(market.all_prices(), many=True).data)


class MarketPriceDetailView(APIView):
    """``GET /market/prices/{symbol}``: one symbol (404 if not traded)."""

    serializer_class = MarketPriceSerializer

    def get(self, request, symbol):
        return Response(MarketPriceSerializer(market.price_row(symbol)).data)
