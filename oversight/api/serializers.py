"""JSON of approval requests (SPEC §5) and of the decision routes' input."""

from __future__ import annotations

from rest_framework import serializers

from api.serializers import StrictInputSerializer
from oversight.representation import ApprovalDecisionSerializer, ApprovalRequestSerializer

# What a decision body may not set: the request's own members and a decision's.
_DECISION_READ_ONLY = (
    *ApprovalRequestSerializer.Meta.fields,
    *ApprovalDecisionSerializer.Meta.fields,
)


class ApproveInputSerializer(StrictInputSerializer):
    read_only_names = _DECISION_READ_ONLY
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class RejectInputSerializer(StrictInputSerializer):
    read_only_names = _DECISION_READ_ONLY
    # Presence is checked by the service (one rule for the API, the admin and the dashboard).
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, default="", trim_whitespace=True
    )
