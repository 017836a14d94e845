from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The live operator/owner dashboard at ``/dashboard/`` (templates + one ES module)."""

    name = "dashboard"
    verbose_name = "Dashboard"
