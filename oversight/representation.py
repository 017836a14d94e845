"""The ApprovalRequest JSON of SPEC §5, in one place for the REST API and the live events
(``approval.requested``, ``approval.completed``)."""

from __future__ import annotations

from rest_framework import serializers

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


class ApprovalOrderSerializer(serializers.Serializer):
    """The order a request is about, so that an operator needs no second call to decide."""

    symbol = serializers.CharField()
    side = serializers.CharField()
    quantity = serializers.DecimalField(max_digits=20, decimal_places=6)
    type = serializers.CharField()
    limit_price = serializers.DecimalField(max_digits=20, decimal_places=2, allow_null=True)
    stop_price = serializers.DecimalField(max_digits=20, decimal_places=2, allow_null=True)
    time_in_force = serializers.CharField()


class ApprovalRequestSerializer(serializers.ModelSerializer):
    """``{id, trade_id, agent_id, order{symbol, side, quantity, type, limit_price, stop_price,
    time_in_force}, amount, status, priority, reason, risk{score, level, factors},
    approvals_required, decisions[…], created_at, expires_at, resolved_at}``."""

    trade_id = serializers.UUIDField(read_only=True)
    agent_id = serializers.UUIDField(read_only=True)
    order = ApprovalOrderSerializer(source="trade", read_only=True)
    risk = RiskSerializer(source="*", read_only=True)
    decisions = ApprovalDecisionSerializer(many=True, read_only=True)

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "trade_id",
            "agent_id",
            "order",
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
