"""Oversight reads: which approval requests a user may see, loaded without N+1 queries."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from agents.permissions import is_operator
from api import problems
from oversight.models import ApprovalDecision, ApprovalRequest


def _is_operator(user) -> bool:
    return is_operator(user)


def approval_base_queryset() -> QuerySet[ApprovalRequest]:
    """Requests with what their JSON needs: decisions and their approvers in one query each."""
    return ApprovalRequest.objects.select_related("agent", "trade").prefetch_related(
        Prefetch(
            "decisions",
            queryset=ApprovalDecision.objects.select_related("approver").order_by("decided_at"),
        )
    )


def approval_queryset_for(user) -> QuerySet[ApprovalRequest]:
    """Operators see every request; an owner sees the requests of their own agents only."""
    queryset = approval_base_queryset()
    if not getattr(user, "is_authenticated", False):
        return queryset.none()
    if _is_operator(user):
        return queryset
    return queryset.filter(agent__owner=user)


def approval_get_for(*, user, approval_request_id) -> ApprovalRequest:
    """The request if ``user`` may see it, else ``problems.NotFound`` (never another's data)."""
    request = approval_queryset_for(user).filter(pk=approval_request_id).first()
    if request is None:
        raise problems.NotFound("No such approval request.")
    return request


def approval_get(*, approval_request_id) -> ApprovalRequest:
    """The request with its decisions (no visibility check: for services)."""
    return approval_base_queryset().get(pk=approval_request_id)
