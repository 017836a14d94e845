"""Admin screens for approval requests: the operators' queue, pending requests first.

Approve and reject are admin actions (one request or many) that call
``trades.services.approval_decide`` for each request, exactly as the REST API does, so the
oversight service, operators-only, self-approval and quorum rules all hold. A problem the
service raises (403 self-approval, 409 already decided, 503 oversight unreachable, …) becomes
an error message for that request; the other selected requests are still decided.
Rejecting asks for the reason on an intermediate page; without one nothing is rejected.

A request's own page has Approve and Reject buttons (reject with a reason field) that post
to the same service; every success message says what was decided, for which order and agent.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from agents.admin import ReadOnlyAdmin, ReadOnlyInline, domain_errors, problem_message
from api.representation import quantity_text
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

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("approver")


def _label(approval: ApprovalRequest) -> str:
    return f"Request {str(approval.id)[:8]} ({approval.agent.name})"


def _order_text(approval: ApprovalRequest) -> str:
    trade = approval.trade
    return f"{trade.side} {quantity_text(trade.quantity)} {trade.symbol}"


def _decided_message(approval: ApprovalRequest, decision: str, reason: str = "") -> str:
    """What the operator's decision did, in words: "Approved: buy 50 TSLA for Momentum bot"."""
    subject = f"{_order_text(approval)} for {approval.agent.name}"
    if decision == "reject":
        return f"Rejected: {subject} (reason: {reason})."
    if approval.status == RequestStatus.APPROVED:
        approval.trade.refresh_from_db(fields=["status"])
        return f"Approved: {subject} (order {approval.trade.status})."
    received = approval.decisions.filter(decision=Decision.APPROVED).count()
    return (
        f"Approval recorded: {subject} ({received} of {approval.approvals_required} "
        "approvals; it waits for another operator)."
    )


def _decide_each(modeladmin, request, approvals, decision: str, reason: str) -> None:
    """Decide each request through the service; one message per request, success or not."""
    from trades.services import approval_decide

    for approval in approvals:
        try:
            decided = approval_decide(
                approval_request_id=approval.id,
                actor=request.user,
                decision=decision,
                reason=reason,
            )
        except domain_errors() as exc:
            modeladmin.message_user(
                request, f"{_label(approval)}: {problem_message(exc)}", level=messages.ERROR
            )
        else:
            modeladmin.message_user(
                request, _decided_message(decided, decision, reason), level=messages.SUCCESS
            )


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id",
        "agent_link",
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
    change_form_template = "admin/oversight/approvalrequest/change_form.html"
    readonly_fields = (
        "id",
        "order",
        "agent_link",
        "amount",
        "status",
        "priority",
        "reason",
        "risk_score",
        "risk_level",
        "risk_factors_table",
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
        return f"{_order_text(approval)} ({approval.trade.status})"

    @admin.display(description="agent", ordering="agent__name")
    def agent_link(self, approval: ApprovalRequest) -> str:
        url = reverse("admin:agents_agent_change", args=[approval.agent_id])
        return format_html('<a href="{}">{}</a>', url, approval.agent.name)

    @admin.display(description="risk factors")
    def risk_factors_table(self, approval: ApprovalRequest) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td class='points'>{}</td><td>{}</td></tr>",
            (
                (
                    str(factor.get("factor", "")).replace("_", " "),
                    factor.get("points", ""),
                    factor.get("detail", ""),
                )
                for factor in approval.risk_factors or []
            ),
        )
        return format_html(
            '<table class="risk-factors"><thead><tr><th>factor</th><th>points</th>'
            "<th>why</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # --- the request's own page: Approve / Reject ------------------------------------------

    def get_urls(self):
        decide = self.admin_site.admin_view(require_POST(self.decide_view))
        return [
            path(
                "<uuid:object_id>/decide/",
                decide,
                name="oversight_approvalrequest_decide",
            ),
            *super().get_urls(),
        ]

    def decide_view(self, request, object_id):
        """POST ``decision`` (approve/reject) and ``reason``: the same service as the API."""
        approval = get_object_or_404(
            ApprovalRequest.objects.select_related("agent", "trade"), pk=object_id
        )
        change_url = reverse("admin:oversight_approvalrequest_change", args=[approval.pk])
        if not self.has_view_permission(request, approval):
            return HttpResponseRedirect(reverse("admin:index"))
        decision = request.POST.get("decision")
        reason = (request.POST.get("reason") or "").strip()
        if decision not in {"approve", "reject"}:
            self.message_user(request, "Choose Approve or Reject.", level=messages.ERROR)
        elif decision == "reject" and not reason:
            self.message_user(
                request, "Nothing was rejected: a reason is required.", level=messages.ERROR
            )
        else:
            _decide_each(self, request, [approval], decision, reason or "approved in the admin")
        return HttpResponseRedirect(change_url)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        approval = ApprovalRequest.objects.filter(pk=object_id).first()
        extra_context = {
            **(extra_context or {}),
            "decidable": approval is not None and approval.status == RequestStatus.PENDING,
            "decide_url": reverse("admin:oversight_approvalrequest_decide", args=[object_id])
            if approval is not None
            else "",
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="approvals", ordering="approvals_received")
    def approvals(self, approval: ApprovalRequest) -> str:
        return f"{approval.approvals_received} / {approval.approvals_required}"

    @admin.action(description="Approve selected requests")
    def approve_requests(self, request, queryset):
        _decide_each(
            self,
            request,
            queryset.select_related("agent").order_by("created_at"),
            "approve",
            "approved in the admin",
        )

    @admin.action(description="Reject selected requests (asks for a reason)")
    def reject_requests(self, request, queryset):
        form = RejectReasonForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST:
            if form.is_valid():
                _decide_each(
                    self,
                    request,
                    queryset.select_related("agent").order_by("created_at"),
                    "reject",
                    form.cleaned_data["reason"],
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
            "orders": [
                (approval, _order_text(approval))
                for approval in queryset.select_related("agent", "trade")
            ],
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
