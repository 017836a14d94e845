"""django-axes' admin screens, opened to operators: they see login failures and unlock.

Axes registers its screens for users with Django model permissions; operators (SPEC §5: staff
or the ``operators`` group, with staff to use the admin) get them here, as every other screen
of this admin gives them. Unlocking a username or address is deleting its access attempts
("Delete selected access attempts"); nothing else of them can be edited or added.
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin

from agents.permissions import is_operator


def _operator_in_admin(request) -> bool:
    user = request.user
    return user.is_active and user.is_staff and is_operator(user)


class OperatorAccessAttemptAdmin(AccessAttemptAdmin):
    """Failed logins per username and address; an operator unlocks by deleting them."""

    def has_module_permission(self, request) -> bool:
        return _operator_in_admin(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return _operator_in_admin(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return _operator_in_admin(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class OperatorReadOnlyMixin:
    def has_module_permission(self, request) -> bool:
        return _operator_in_admin(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return _operator_in_admin(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class OperatorAccessLogAdmin(OperatorReadOnlyMixin, AccessLogAdmin):
    """Successful logins and logouts, read-only."""


class OperatorAccessFailureLogAdmin(OperatorReadOnlyMixin, AccessFailureLogAdmin):
    """The failure log (when enabled), read-only."""


for model, model_admin in (
    (AccessAttempt, OperatorAccessAttemptAdmin),
    (AccessLog, OperatorAccessLogAdmin),
    (AccessFailureLog, OperatorAccessFailureLogAdmin),
):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
