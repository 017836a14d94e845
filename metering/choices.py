from django.db import models


class MetricCode(models.TextChoices):
    """The metric codes the server itself meters (SPEC §5); clients may post others."""

    API_CALLS = "api_calls"
    TRADE_EXECUTIONS = "trade_executions"
    TRADE_VOLUME = "trade_volume"
    OVERSIGHT_REQUESTS = "oversight_requests"
