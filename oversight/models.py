"""Approval requests mirrored from the oversight service, and the decisions taken on them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from agents.models import MONEY
from oversight.choices import Decision, Priority, RequestStatus, RiskLevel


class ApprovalRequest(models.Model):
    """A trade waiting for human approval. ``id`` is the oversight service's request id."""

    id = models.UUIDField(primary_key=True, editable=False)
    trade = models.OneToOneField(
        "trades.Trade", on_delete=models.CASCADE, related_name="approval_request"
    )
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="approval_requests"
    )
    amount = models.DecimalField(**MONEY)
    status = models.CharField(
        max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING, db_index=True
    )
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.MEDIUM)
    # Why the policy asked for a human (e.g. "notional 20000.00 ≥ auto_approval_limit 10000").
    reason = models.TextField(blank=True, default="")
    risk_score = models.PositiveSmallIntegerField(default=0)
    risk_level = models.CharField(max_length=8, choices=RiskLevel.choices, default=RiskLevel.LOW)
    risk_factors = models.JSONField(default=list, blank=True)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    policy_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"])]

    def __str__(self) -> str:
        return f"approval {self.id} ({self.status})"


class ApprovalDecision(models.Model):
    """One operator's approval or rejection of a request (at most one per operator)."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approval_decisions"
    )
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reason = models.TextField(blank=True, default="")
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["decided_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "approver"], name="decision_once_per_approver"
            )
        ]

    def __str__(self) -> str:
        return f"{self.decision} by {self.approver.get_username()}"
