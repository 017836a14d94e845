"""HTTP middleware: request ids and one access-log line per request."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.utils.functional import SimpleLazyObject

from api.routes import route_agent_id
from observability import request_context
from observability.metrics import HTTP_REQUEST_SECONDS

access_log = logging.getLogger("trading_demo.access")


class RequestIdMiddleware:
    """Accepts or generates ``X-Request-ID``, echoes it, and logs the request when done.

    Synchronous only, as every view is (see ``MIDDLEWARE`` in the settings).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_context.accept_or_generate(request.headers.get("X-Request-ID"))
        request.request_id = request_id
        token = request_context.set_request_id(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            self._finish(request, response, started)
            return response
        finally:
            request_context.reset_request_id(token)

    @staticmethod
    def _finish(request, response, started: float) -> None:
        seconds = time.perf_counter() - started
        response["X-Request-ID"] = request.request_id
        duration_ms = round(seconds * 1000, 2)
        resolver = getattr(request, "resolver_match", None)
        # The route pattern, not the raw path: one time series per route, whatever the ids.
        route = resolver.route if resolver is not None and resolver.route else "<unmatched>"
        method = request.method if request.method in _KNOWN_METHODS else "OTHER"
        HTTP_REQUEST_SECONDS.labels(method, route, str(response.status_code)).observe(seconds)
        access_log.info(
            "%s %s %s %sms",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "user": _username(request),
                "agent": route_agent_id(request),
                "request_id": request.request_id,
            },
        )


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _username(request) -> str | None:
    """The authenticated user's name, without loading a user just to log it.

    A user that authentication set (DRF's token or session authentication replaces
    ``request.user`` with it) is named. Django's lazy ``request.user`` (a plain Django view) is
    looked at only when the request carries a session cookie, so a request that cannot be
    logged in costs no query.
    """
    user = getattr(request, "user", None)
    if user is None:
        return None
    if isinstance(user, SimpleLazyObject) and settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return None
    return user.get_username() if user.is_authenticated else None
