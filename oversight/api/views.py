"""Approval request routes (SPEC §5): list, detail, approve, reject."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from api.schema import PROBLEM
from oversight.api.filters import ApprovalRequestFilter
from oversight.api.serializers import (
    ApprovalRequestSerializer,
    ApproveInputSerializer,
    RejectInputSerializer,
)
from oversight.selectors import approval_get_for, approval_queryset_for
from trades.services import approval_decide

_DECISION_ERRORS = {400: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 503: PROBLEM}


class ApprovalRequestViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Operators see every request and decide them; owners see their agents' requests."""

    serializer_class = ApprovalRequestSerializer
    filterset_class = ApprovalRequestFilter
    ordering_fields = ["created_at", "expires_at", "amount", "risk_score"]
    ordering = ["-created_at"]
    lookup_field = "pk"

    def get_queryset(self):
        return approval_queryset_for(self.request.user).order_by("-created_at")

    def retrieve(self, request, pk=None):
        approval = approval_get_for(user=request.user, approval_request_id=pk)
        return Response(ApprovalRequestSerializer(approval).data)

    @extend_schema(
        request=ApproveInputSerializer,
        responses={200: ApprovalRequestSerializer, **_DECISION_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        data = ApproveInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        approval = approval_decide(
            approval_request_id=pk,
            actor=request.user,
            decision="approve",
            reason=data.validated_data["reason"],
        )
        return Response(ApprovalRequestSerializer(approval).data)

    @extend_schema(
        request=RejectInputSerializer,
        responses={200: ApprovalRequestSerializer, **_DECISION_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        data = RejectInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        approval = approval_decide(
            approval_request_id=pk,
            actor=request.user,
            decision="reject",
            reason=data.validated_data["reason"],
        )
        return Response(ApprovalRequestSerializer(approval).data)
