"""Admin screens for approval requests: the operators' queue, pending requests first.

Approve and reject are admin actions (one request or many) that call
``oversight.services.approval_decide`` for each request, exactly as the REST API does, so the
oversight service, operators-only, self-approval and quorum rules all hold. A problem the
service raises (403 self-approval, 409 already decided, 503 oversight unreachable, …) becomes
an error message for that request; the other selected requests are still decided.
Rejecting asks for the reason on an intermediate page; without one nothing is rejected.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.template.response import TemplateResponse

from agents.admin import ReadOnlyAdmin, ReadOnlyInline, run_service_action
from oversight.choices import Decision, RequestStatus
from oversight.models import ApprovalDecision, ApprovalRequest

REASON_MAX_LENGTH = 1000


class RejectReasonForm(forms.Form):
    reason = forms.CharField(
        label="Reason for the rejection",
        required=True,
        max_length=REASON_MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Sent to the oversight service and recorded with your decision.",
        error_messages={"required": "A reason is required to reject."},
    )


class ApprovalDecisionInline(ReadOnlyInline):
    model = ApprovalDecision
    fields = ("approver", "decision", "reason", "decided_at")
    readonly_fields = fields
    verbose_name = "decision"
    verbose_name_plural = "decision history"


def _label(approval: ApprovalRequest) -> str:
    return f"Request {str(approval.id)[:8]} ({approval.agent.name})"


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id",
        "agent",
        "order",
        "amount",
        "status",
        "priority",
        "risk_level",
        "approvals",
        "created_at",
        "expires_at",
    )
    list_filter = (
        "status",
        "priority",
        ("agent", admin.RelatedOnlyFieldListFilter),
        "risk_level",
    )
    search_fields = ("id", "trade__id", "trade__symbol", "agent__name", "agent__owner__username")
    list_select_related = ("agent", "agent__owner", "trade")
    date_hierarchy = "created_at"
    inlines = (ApprovalDecisionInline,)
    actions = ("approve_requests", "reject_requests")
    readonly_fields = (
        "id",
        "trade",
        "agent",
        "amount",
        "status",
        "priority",
        "reason",
        "risk_score",
        "risk_level",
        "risk_factors",
        "approvals_required",
        "policy_id",
        "created_at",
        "expires_at",
        "resolved_at",
    )
    fields = readonly_fields

    def get_queryset(self, request):
        # Not super(): ModelAdmin.get_queryset orders before the status rank exists.
        return (
            self.model.objects.get_queryset()
            .annotate(
                status_rank=Case(
                    When(status=RequestStatus.PENDING, then=Value(0)),
                    default=Value(1),
                    output_field=IntegerField(),
                ),
                approvals_received=Count(
                    "decisions", filter=Q(decisions__decision=Decision.APPROVED)
                ),
            )
            .order_by(*self.get_ordering(request))
        )

    def get_ordering(self, request):
        # Pending first (the operator's queue), newest first within each group.
        return ("status_rank", "-created_at")

    @admin.display(description="id", ordering="id")
    def short_id(self, approval: ApprovalRequest) -> str:
        return str(approval.id)[:8]

    @admin.display(description="order")
    def order(self, approval: ApprovalRequest) -> str:
        trade = approval.trade
        return f"{trade.side} {trade.quantity.normalize():f} {trade.symbol} ({trade.status})"

    @admin.display(description="approvals", ordering="approvals_received")
    def approvals(self, approval: ApprovalRequest) -> str:
        return f"{approval.approvals_received} / {approval.approvals_required}"

    @admin.action(description="Approve selected requests")
    def approve_requests(self, request, queryset):
        from oversight.services import approval_decide

        run_service_action(
            self,
            request,
            queryset.select_related("agent").order_by("created_at"),
            lambda approval: approval_decide(
                approval_request_id=approval.id,
                actor=request.user,
                decision="approve",
                reason="approved in the admin",
            ),
            done="Approved",
            label=_label,
        )

    @admin.action(description="Reject selected requests (asks for a reason)")
    def reject_requests(self, request, queryset):
        from oversight.services import approval_decide

        form = RejectReasonForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST:
            if form.is_valid():
                reason = form.cleaned_data["reason"]
                run_service_action(
                    self,
                    request,
                    queryset.select_related("agent").order_by("created_at"),
                    lambda approval: approval_decide(
                        approval_request_id=approval.id,
                        actor=request.user,
                        decision="reject",
                        reason=reason,
                    ),
                    done="Rejected",
                    label=_label,
                )
                return None
            self.message_user(
                request, "Nothing was rejected: a reason is required.", level=messages.ERROR
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Reject approval requests",
            "opts": self.model._meta,
            "form": form,
            "approvals": queryset.select_related("agent", "trade"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action_name": "reject_requests",
            "select_across": request.POST.get("select_across", "0"),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/oversight/approvalrequest/reject_reason.html", context
        )


@admin.register(ApprovalDecision)
class ApprovalDecisionAdmin(ReadOnlyAdmin):
    list_display = ("request", "approver", "decision", "reason", "decided_at")
    list_filter = ("decision", ("approver", admin.RelatedOnlyFieldListFilter))
    search_fields = ("request__id", "approver__username", "reason")
    list_select_related = ("request", "approver")
    ordering = ("-decided_at",)
    date_hierarchy = "decided_at"
