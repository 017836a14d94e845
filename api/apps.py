from django.apps import AppConfig


class ApiConfig(AppConfig):
    """What every API route shares: the problem catalogue, errors, parsing, paging, limits."""

    name = "api"
    verbose_name = "API"

    def ready(self) -> None:
        # Registers every problem type with drf-problems so its documentation page resolves;
        # connects the receivers that keep the token cache true to the database.
        from api import problems, receivers  # noqa: F401
