"""HTTP middleware: request ids and one access-log line per request."""

from __future__ import annotations

import logging
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from config import request_context

access_log = logging.getLogger("trading_demo.access")


class RequestIdMiddleware:
    """Accepts or generates ``X-Request-ID``, echoes it, and logs the request when done.

    Works for both sync and async views: Django picks the matching call path.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
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

    async def _acall(self, request):
        request_id = request_context.accept_or_generate(request.headers.get("X-Request-ID"))
        request.request_id = request_id
        token = request_context.set_request_id(request_id)
        started = time.perf_counter()
        try:
            response = await self.get_response(request)
            self._finish(request, response, started)
            return response
        finally:
            request_context.reset_request_id(token)

    @staticmethod
    def _finish(request, response, started: float) -> None:
        response["X-Request-ID"] = request.request_id
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        user = getattr(request, "user", None)
        resolver = getattr(request, "resolver_match", None)
        agent_id = (
            resolver.kwargs.get("agent_id") or resolver.kwargs.get("pk") if resolver else None
        )
        access_log.info(
            "%s %s %s %sms",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "user": user.get_username() if user is not None and user.is_authenticated else None,
                "agent": str(agent_id) if agent_id else None,
            },
        )
