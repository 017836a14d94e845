"""Order and market routes of SPEC §5. Each view reads through a selector or calls one
service."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.selectors import agent_owner_id_for
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
        """The orders of the URL's agent if it is the user's: its owner is checked in the
        list's own statements (``list`` answers for an agent with no orders here)."""
        if getattr(self, "swagger_fake_view", False):  # schema generation: no agent in the URL
            return Trade.objects.none()
        return selectors.trade_queryset_for(
            agent_id=self.kwargs["agent_id"], owner_id=self.request.user.pk
        )

    def list(self, request, *args, **kwargs):
        """A page of the user's agent's orders, read with the agent's owner in one statement
        (and a count when the page is full).

        When that page is empty, or the query is refused (a bad filter, a page past the end),
        the agent is looked up: an agent that does not exist or is another owner's is 404
        ``No such agent.`` before anything else, as every agent route answers (and the
        ``api_calls`` middleware charges no 404); an operator's read of another owner's agent
        is then the agent's whole list; the owner's empty page or refusal stands.
        """
        try:
            page = self.page_of(self.get_queryset())
        except exceptions.APIException:
            if not self.is_anothers_agent():
                raise
            page = self.page_of(selectors.trade_queryset_for(agent_id=self.kwargs["agent_id"]))
        else:
            if not page and self.is_anothers_agent():
                page = self.page_of(selectors.trade_queryset_for(agent_id=self.kwargs["agent_id"]))
        tz = timezone.get_current_timezone()
        return self.get_paginated_response(
            [
                trade_representation(row, approval_request_id=row.approval_request__id, tz=tz)
                for row in page
            ]
        )

    def page_of(self, queryset) -> list:
        # A page reads the columns it shows as rows, not Trade instances; each row's JSON is
        # the serializer's (trade_representation).
        return self.paginate_queryset(trade_rows(self.filter_queryset(queryset)))

    def is_anothers_agent(self) -> bool:
        """False for the user's own agent, True for another owner's that an operator may see;
        ``problems.NotFound`` for an agent the user may not see or that does not exist."""
        user = self.request.user
        return agent_owner_id_for(user=user, agent_id=self.kwargs["agent_id"]) != user.pk

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
