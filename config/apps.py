from django.apps import AppConfig


class ConfigAppConfig(AppConfig):
    """Project-wide pieces: the operators group, the problem catalogue, service endpoints."""

    name = "config"
    verbose_name = "Trading Demo"

    def ready(self) -> None:
        # Registers every problem type with drf-problems so its documentation page resolves.
        from config import problems  # noqa: F401
