from __future__ import annotations

import pytest

METERING_MIDDLEWARE = "metering.middleware.ApiCallMeteringMiddleware"


@pytest.fixture
def api_call_metering(settings):
    """The api_calls middleware in place, right after Django's AuthenticationMiddleware."""
    if METERING_MIDDLEWARE not in settings.MIDDLEWARE:
        middleware = list(settings.MIDDLEWARE)
        position = middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware")
        middleware.insert(position + 1, METERING_MIDDLEWARE)
        settings.MIDDLEWARE = middleware


@pytest.fixture
def metering_client():
    from grpc_clients.registry import get_metering_client

    return get_metering_client()
