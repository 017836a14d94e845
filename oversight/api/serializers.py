"""JSON of approval requests (SPEC §5) and of the decision routes' input."""

from __future__ import annotations

from rest_framework import serializers

from config.serializers import StrictInputSerializer
from oversight.models import ApprovalDecision, ApprovalRequest


class RiskSerializer(serializers.Serializer):
    score = serializers.IntegerField(source="risk_score")
    level = serializers.CharField(source="risk_level")
    factors = serializers.JSONField(source="risk_factors")


class ApprovalDecisionSerializer(serializers.ModelSerializer):
    approver = serializers.CharField(source="approver.username", read_only=True)

    class Meta:
        model = ApprovalDecision
        fields = ["approver", "decision", "reason", "decided_at"]
        read_only_fields = fields


class ApprovalRequestSerializer(serializers.ModelSerializer):
    """``{id, trade_id, agent_id, amount, status, priority, reason, risk{score, level, factors},
    approvals_required, decisions[…], created_at, expires_at, resolved_at}``."""

    trade_id = serializers.UUIDField(read_only=True)
    agent_id = serializers.UUIDField(read_only=True)
    risk = RiskSerializer(source="*", read_only=True)
    decisions = ApprovalDecisionSerializer(many=True, read_only=True)

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "trade_id",
            "agent_id",
            "amount",
            "status",
            "priority",
            "reason",
            "risk",
            "approvals_required",
            "decisions",
            "created_at",
            "expires_at",
            "resolved_at",
        ]
        read_only_fields = fields


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
