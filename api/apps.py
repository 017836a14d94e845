from django.apps import AppConfig


class ApiConfig(AppConfig):
    """What every API route shares: the problem catalogue, errors, parsing, paging, limits."""

    name = "api"
    verbose_name = "API"

    def ready(self) -> None:
        # Registers every problem type with drf-problems so its documentation page resolves.
        from api import problems  # noqa: F401
