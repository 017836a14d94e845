"""Abuse limits at the edge: the request body size and the request rate.

* ``BodyLimitMiddleware`` answers 413 ``payload-too-large`` for a body over
  ``DATA_UPLOAD_MAX_MEMORY_SIZE``. Django enforces that setting only when ``request.body`` is
  read; DRF's parsers read the stream instead, so without this a JSON body of any size is
  parsed. Under ASGI, Django buffers the whole body (to disk past 2.5 MB) before any
  middleware runs, whatever its size, and a chunked body has no Content-Length to check:
  ``BodyLimitASGIMiddleware`` stops reading at the limit and flags the request, which the
  Django middleware then answers.
* ``NulCharacterMiddleware`` answers 400 for a NUL character in the path or the query
  string: PostgreSQL text cannot hold one, so a filter or lookup that passed it on was a 500.
* ``RATE_LIMIT`` on ``/api/`` (django-ratelimit), two buckets of that size: anonymous
  requests per client address (``RateLimitMiddleware``, before any view), authenticated ones
  per user (``UserRateThrottle``, DRF's throttle hook, once the credentials are checked), so
  that an operator's dashboard and a script on the same address do not share one budget. A
  request whose credentials are refused (401) counts against its address, so guessing tokens
  is limited like anonymous traffic. The 429 ``rate-limited`` detail names the bucket, its size
  and when it resets; ``Retry-After`` = the seconds left in the window.
  ``enforce_trade_rate`` limits order submission per user (``TRADE_RATE_LIMIT``).
  Both are off when ``RATE_LIMIT_ENABLED`` is false. The counters live in the default cache
  (Redis when ``REDIS_URL`` is set, whose INCR is atomic across processes). When the cache
  cannot be reached the limits fail open: an outage of Redis must not take the API down.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.http import HttpResponse
from django_ratelimit.core import get_usage
from rest_framework.throttling import BaseThrottle

from api import problems
from api.renderers import OrjsonRenderer
from api.representation import utc_text
from config.env import parse_rate

logger = logging.getLogger("trading_demo.limits")

BODY_TOO_LARGE_SCOPE_KEY = "trading_demo.body_too_large"


def problem_response(request, problem: problems.Problem) -> HttpResponse:
    """Render a problem document outside DRF (middleware), exactly as the API handler does."""
    from api.exceptions import problem_exception_handler

    rendered = problem_exception_handler(problem, {"request": request})
    response = HttpResponse(
        OrjsonRenderer().render(rendered.data),
        status=rendered.status_code,
        content_type="application/problem+json",
    )
    for header, value in rendered.headers.items():
        if header.lower() != "content-type":
            response[header] = value
    return response


# --- body size ---------------------------------------------------------------------------------


def _declared_length(headers) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitASGIMiddleware:
    """ASGI wrapper of the Django HTTP app: reads at most the body limit, never more.

    A declared Content-Length over the limit is refused before reading; otherwise the body
    messages are read and counted (a chunked body too) and replayed to Django. Past the limit
    the rest is discarded unread by Django, which gets an empty body and a flag in its scope.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if scope["type"] != "http" or limit is None:
            return await self.app(scope, receive, send)
        declared = _declared_length(scope.get("headers", ()))
        too_large = declared is not None and declared > limit
        buffered: list[dict] = []
        if not too_large:
            size = 0
            while True:
                message = await receive()
                buffered.append(message)
                if message["type"] != "http.request":
                    break  # http.disconnect: let Django see it
                size += len(message.get("body", b""))
                if size > limit:
                    too_large = True
                    break
                if not message.get("more_body", False):
                    break
        if too_large:
            scope = {**scope, BODY_TOO_LARGE_SCOPE_KEY: True}
            buffered = [{"type": "http.request", "body": b"", "more_body": False}]

        async def replay():
            if buffered:
                return buffered.pop(0)
            while True:
                message = await receive()
                # The rest of a refused body is discarded as it arrives, never stored;
                # Django only waits for the disconnect once it has the body.
                if not (too_large and message["type"] == "http.request"):
                    return message

        return await self.app(scope, replay, send)


class BodyLimitMiddleware:
    """413 ``payload-too-large`` for a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and self._too_large(request, limit):
            return problem_response(request, problems.PayloadTooLarge())
        return self.get_response(request)

    @staticmethod
    def _too_large(request, limit: int) -> bool:
        if getattr(request, "scope", {}).get(BODY_TOO_LARGE_SCOPE_KEY):
            return True
        try:
            return int(request.META.get("CONTENT_LENGTH") or 0) > limit
        except ValueError:
            return False


class NulCharacterMiddleware:
    """400 ``validation-error`` for ``%00`` in the path or a query parameter."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = request.GET
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in value for value in query.getlist(key)) for key in query
        ):
            problem = problems.ValidationFailed("The URL may not contain NUL characters.")
            return problem_response(request, problem)
        return self.get_response(request)


# --- request rate ------------------------------------------------------------------------------


def _usage(request, *, group: str, key, rate: str) -> dict | None:
    """Count this request; None when not limited (off, or the cache is unreachable)."""
    if not settings.RATE_LIMIT_ENABLED:
        return None
    try:
        return get_usage(request, group=group, key=key, rate=rate, increment=True)
    except Exception:
        logger.warning("rate limit not applied: the cache is unavailable", exc_info=True)
        return None


def _rate_limited(usage: dict | None, *, scope: str = "") -> problems.RateLimited | None:
    if usage is None or not usage["should_limit"]:
        return None
    retry_after = max(1, usage["time_left"])
    if not scope:
        return problems.RateLimited(retry_after=retry_after)
    resets_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=retry_after)
    count, seconds = parse_rate(settings.RATE_LIMIT)
    return problems.RateLimited(
        f"The API limit of {count} requests per {_period_text(seconds)} {scope} is used up; "
        f"it resets in {retry_after} s (at {utc_text(resets_at)}).",
        retry_after=retry_after,
        limit=count,
        period_seconds=seconds,
        scope=scope.removeprefix("per ").removeprefix("for this "),
        reset_at=utc_text(resets_at),
    )


def _period_text(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            amount = seconds // size
            return unit if amount == 1 else f"{amount} {unit}s"
    return f"{seconds} seconds"


def _is_api(request) -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def _has_credentials(request) -> bool:
    """Whether the request carries a token or a session: then its user is counted instead."""
    header = request.META.get("HTTP_AUTHORIZATION", "").split(" ", 1)[0].lower()
    return header in {"token", "bearer"} or settings.SESSION_COOKIE_NAME in request.COOKIES


ADDRESS_COUNTED = "trading_demo_rate_counted"
ADDRESS_SCOPE = "per address"
USER_SCOPE = "for this user"


def _count_address(request) -> problems.RateLimited | None:
    setattr(request, ADDRESS_COUNTED, True)
    usage = _usage(request, group="api", key="ip", rate=settings.RATE_LIMIT)
    return _rate_limited(usage, scope=ADDRESS_SCOPE)


class RateLimitMiddleware:
    """``RATE_LIMIT`` per client address on ``/api/`` requests without credentials, and on
    requests whose credentials were refused (a 401 over the limit becomes the 429)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not _is_api(request):
            return self.get_response(request)
        if not _has_credentials(request):
            problem = _count_address(request)
            if problem is not None:
                return problem_response(request, problem)
            return self.get_response(request)
        response = self.get_response(request)
        if response.status_code == 401 and not getattr(request, ADDRESS_COUNTED, False):
            problem = _count_address(request)
            if problem is not None:
                return problem_response(request, problem)
        return response


class UserRateThrottle(BaseThrottle):
    """DRF throttle: ``RATE_LIMIT`` per authenticated user; a request that reached a view
    without a user (credentials that named nobody, on an open endpoint) counts against its
    address unless the middleware counted it already."""

    def allow_request(self, request, view) -> bool:
        if not _is_api(request):
            return True
        if request.user and request.user.is_authenticated:
            usage = _usage(request, group="api-user", key=_user_key, rate=settings.RATE_LIMIT)
            problem = _rate_limited(usage, scope=USER_SCOPE)
        elif not getattr(request, ADDRESS_COUNTED, False):  # DRF's Request reads through
            problem = _count_address(request)
        else:
            problem = None
        if problem is not None:
            raise problem
        return True


def client_ip(request) -> str:
    """The client's address for the per-IP limit.

    Behind a reverse proxy (``RATE_LIMIT_IP_HEADER``, e.g. ``HTTP_X_FORWARDED_FOR``) it is the
    last address in that header, the one the nearest proxy — ours — wrote; a missing or
    malformed header falls back to the connection's address, so a client cannot escape the
    limit (or break the request) by sending garbage.
    """
    header = settings.RATE_LIMIT_IP_HEADER
    if header:
        for candidate in reversed(request.META.get(header, "").split(",")):
            candidate = candidate.strip()
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                break
    return request.META.get("REMOTE_ADDR") or "0.0.0.0"


def _user_key(group, request) -> str:
    return str(request.user.pk)


def enforce_trade_rate(request) -> None:
    """Raise ``RateLimited`` when the caller submits orders faster than ``TRADE_RATE_LIMIT``.

    Keyed by the authenticated user, i.e. by API token (one per user) or session.
    """
    usage = _usage(request, group="trade-submit", key=_user_key, rate=settings.TRADE_RATE_LIMIT)
    problem = _rate_limited(usage)
    if problem is not None:
        raise problem


def limits_summary() -> str:
    """The request limits in force, in words, for the start-up banner."""
    if not settings.RATE_LIMIT_ENABLED:
        return "off (RATE_LIMIT_ENABLED=false)"
    count, seconds = parse_rate(settings.RATE_LIMIT)
    orders, order_seconds = parse_rate(settings.TRADE_RATE_LIMIT)
    return (
        f"{count} requests per {_period_text(seconds)} per address (anonymous) "
        f"and per user (signed in); {orders} orders per {_period_text(order_seconds)} per user"
    )
