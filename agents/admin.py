"""Admin screens for agents, their positions and portfolio snapshots.

Every trading model is read-only in the admin: money, positions and statuses change only
through the domain services, which is where the rules of SPEC §5 live. Operators act through
admin actions that call those services (``agent_terminate``, ``agent_update``), and a problem a
service raises is shown as an error message for that object instead of a crash.

``ReadOnlyAdmin`` and ``problem_message`` are shared by the other apps' admin modules.
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin, messages
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F
from django.utils.html import format_html_join

from agents.choices import AgentStatus
from agents.models import Agent, AgentLimitChange, PortfolioSnapshot, Position
from api.problems import Problem
from grpc_clients.errors import GrpcClientError


def problem_message(exc: Exception) -> str:
    """A one-line, operator-readable description of a problem raised by a domain service."""
    if isinstance(exc, Problem):
        detail = str(exc.detail)
        extra = ", ".join(f"{key}={value}" for key, value in exc.extensions.items())
        return f"{exc.title} ({exc.status_code}): {detail}" + (f" [{extra}]" if extra else "")
    if isinstance(exc, GrpcClientError):
        return (
            f"Service Unavailable (503): the {exc.service} service could not be reached "
            f"({exc.code}); nothing was changed, try again shortly"
        )
    if isinstance(exc, DjangoValidationError):
        return "Validation Error (400): " + "; ".join(exc.messages)
    raise TypeError(f"not a domain problem: {exc!r}")


def domain_errors() -> tuple[type[Exception], ...]:
    """Exceptions an admin action turns into an error message (anything else is a bug)."""
    return (Problem, GrpcClientError, DjangoValidationError)


def run_service_action(
    modeladmin: admin.ModelAdmin,
    request,
    objects,
    call,
    *,
    done: str,
    label=str,
) -> int:
    """Call ``call(obj)`` for each object; report successes and each failure as messages.

    Each call is the service's own transaction, so one failure leaves the others done.
    Returns how many succeeded.
    """
    succeeded = 0
    for obj in objects:
        try:
            call(obj)
        except domain_errors() as exc:
            modeladmin.message_user(
                request, f"{label(obj)}: {problem_message(exc)}", level=messages.ERROR
            )
        else:
            succeeded += 1
    if succeeded:
        noun = "object" if succeeded == 1 else "objects"
        modeladmin.message_user(request, f"{done}: {succeeded} {noun}.", level=messages.SUCCESS)
    return succeeded


class ReadOnlyAdmin(admin.ModelAdmin):
    """Staff (who are operators, SPEC §5) may view; nobody adds, edits or deletes by form.

    Admin actions declared on subclasses remain available; they go through services.
    """

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class PositionInline(ReadOnlyInline):
    model = Position
    fields = ("symbol", "quantity", "reserved_quantity", "cost_basis", "avg_price", "updated_at")
    readonly_fields = fields


class AgentLimitChangeInline(ReadOnlyInline):
    """The agent's governance config history, newest first (the audit trail is read-only)."""

    model = AgentLimitChange
    fields = ("changed_at", "setting", "before", "after", "actor_username", "by_operator")
    readonly_fields = fields
    ordering = ("-changed_at", "-id")
    verbose_name = "limit change"
    verbose_name_plural = "limit changes (audit)"


@admin.register(Agent)
class AgentAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "owner",
        "status",
        "strategy",
        "budget",
        "cash_balance",
        "reserved_cash",
        "available",
        "realized_pnl",
        "created_at",
    )
    list_filter = ("status", "strategy", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "id", "owner__username")
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    inlines = (PositionInline, AgentLimitChangeInline)
    actions = ("terminate_agents", "pause_agents", "resume_agents")
    fields = (
        "id",
        "name",
        "owner",
        "status",
        "strategy",
        "risk_tolerance",
        "budget",
        "cash_balance",
        "reserved_cash",
        "available",
        "realized_pnl",
        "portfolio_summary",
        "config",
        "event_seq",
        "created_at",
        "updated_at",
        "last_active_at",
        "terminated_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(available_cash_db=F("cash_balance") - F("reserved_cash"))
        )

    @admin.display(description="available cash", ordering="available_cash_db")
    def available(self, agent: Agent) -> Decimal:
        return agent.available_cash

    @admin.display(description="portfolio (current prices)")
    def portfolio_summary(self, agent: Agent) -> str:
        try:
            from trades.selectors import portfolio_for

            portfolio = portfolio_for(agent)
        except Exception:  # a display helper must never break the page
            return "—"
        rows = [
            ("Total value", portfolio.get("total_value")),
            ("Positions value", portfolio.get("positions_value")),
            ("Unrealized P&L", portfolio.get("unrealized_pnl")),
            ("Realized P&L", portfolio.get("realized_pnl")),
        ]
        return format_html_join("", "<div>{}: <strong>{}</strong></div>", rows)

    @admin.action(description="Terminate selected agents (kill switch: cancel orders, approvals)")
    def terminate_agents(self, request, queryset):
        from trades.services import agent_terminate

        run_service_action(
            self,
            request,
            queryset,
            lambda agent: agent_terminate(agent=agent, actor=request.user),
            done="Terminated",
            label=lambda agent: f"Agent {agent.name}",
        )

    @admin.action(description="Pause selected agents")
    def pause_agents(self, request, queryset):
        self._set_status(request, queryset, AgentStatus.PAUSED, done="Paused")

    @admin.action(description="Resume selected (paused) agents")
    def resume_agents(self, request, queryset):
        self._set_status(request, queryset, AgentStatus.ACTIVE, done="Resumed")

    def _set_status(self, request, queryset, status: str, *, done: str) -> None:
        from agents.services import agent_update

        run_service_action(
            self,
            request,
            queryset,
            lambda agent: agent_update(agent=agent, actor=request.user, status=status),
            done=done,
            label=lambda agent: f"Agent {agent.name}",
        )


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = (
        "agent",
        "symbol",
        "quantity",
        "reserved_quantity",
        "cost_basis",
        "avg_price",
        "updated_at",
    )
    list_filter = ("symbol",)
    search_fields = ("agent__name", "agent__id", "symbol")
    list_select_related = ("agent",)
    ordering = ("agent", "symbol")


@admin.register(PortfolioSnapshot)
class PortfolioSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("agent", "timestamp", "cash_balance", "positions_value", "total_value")
    list_filter = (("agent", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("agent__name", "agent__id")
    list_select_related = ("agent",)
    ordering = ("-timestamp",)
    date_hierarchy = "timestamp"


@admin.register(AgentLimitChange)
class AgentLimitChangeAdmin(ReadOnlyAdmin):
    """Every change of an agent's governance config: who, when, before, after. Read-only."""

    list_display = (
        "changed_at",
        "agent",
        "setting",
        "before",
        "after",
        "actor_username",
        "by_operator",
    )
    list_filter = ("setting", "by_operator", ("agent", admin.RelatedOnlyFieldListFilter))
    search_fields = ("agent__name", "agent__id", "actor_username", "setting")
    list_select_related = ("agent",)
    ordering = ("-changed_at", "-id")
    date_hierarchy = "changed_at"
