"""The one error path: every exception raised while serving the API becomes a problem document.

``problem_exception_handler`` normalises what reaches it into a ``api.problems.Problem`` and
then delegates to drf-problems, which renders ``type``, ``title`` and ``status``. Around that it
adds ``detail``, ``instance``, extension members and ``Retry-After``; and it makes sure that
nothing about an unexpected exception leaves the server outside DEBUG.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django_ratelimit.exceptions import Ratelimited
from drf_problems.exceptions import exception_handler as drf_problems_handler
from rest_framework import exceptions
from rest_framework.fields import get_error_detail

from api import problems
from grpc_clients.errors import GrpcClientError
from grpc_clients.errors import ServiceUnavailable as GrpcServiceUnavailable

logger = logging.getLogger("trading_demo.errors")


def problem_exception_handler(exc, context):
    problem = to_problem(exc)
    response = drf_problems_handler(problem, context)
    data = response.data
    data.setdefault("detail", str(problem.detail))
    request = context.get("request")
    if request is not None:
        data["instance"] = request.get_full_path()
    data.update(problem.extensions)
    if problem.retry_after is not None:
        response["Retry-After"] = str(problem.retry_after)
    # DRF sets the challenge on its own exception (a 401 must carry one, RFC 9110 §15.5.2).
    if getattr(exc, "auth_header", None):
        response["WWW-Authenticate"] = exc.auth_header
    response.content_type = "application/problem+json"
    return response


def to_problem(exc: BaseException) -> problems.Problem:
    """Map any exception to the problem type a client should see."""
    if isinstance(exc, problems.Problem):
        return exc
    if isinstance(exc, DjangoValidationError):
        return _validation_problem(get_error_detail(exc))
    if isinstance(exc, exceptions.ValidationError):
        return _validation_problem(exc.detail)
    if isinstance(exc, exceptions.ParseError):
        return problems.ValidationFailed(f"Malformed request body: {exc.detail}")
    if isinstance(exc, Http404 | exceptions.NotFound):
        return problems.NotFound()
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return problems.Unauthorized(str(exc.detail))
    # Ratelimited subclasses Django's PermissionDenied: test it first.
    if isinstance(exc, Ratelimited):
        return problems.RateLimited(retry_after=settings.RATE_LIMIT_PERIOD_SECONDS)
    if isinstance(exc, exceptions.Throttled):
        return problems.RateLimited(retry_after=int(exc.wait) if exc.wait else None)
    if isinstance(exc, DjangoPermissionDenied | exceptions.PermissionDenied):
        return problems.Forbidden()
    if isinstance(exc, exceptions.MethodNotAllowed):
        return problems.MethodNotAllowed(str(exc.detail))
    if isinstance(exc, exceptions.NotAcceptable):
        return problems.NotAcceptable()
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return problems.UnsupportedMediaType(str(exc.detail))
    if isinstance(exc, RequestDataTooBig):
        return problems.PayloadTooLarge()
    if isinstance(exc, GrpcServiceUnavailable):
        logger.warning("dependency unavailable: %s.%s %s", exc.service, exc.method, exc.code)
        return problems.ServiceUnavailable(
            f"The {exc.service} service is unavailable; nothing was changed. Retry later.",
            service=exc.service,
        )
    if isinstance(exc, GrpcClientError):
        logger.error("unexpected %s answer from %s.%s", exc.code, exc.service, exc.method)
        return problems.ServiceUnavailable(
            f"The {exc.service} service gave an unexpected answer; nothing was changed.",
            service=exc.service,
        )
    if isinstance(exc, exceptions.APIException):
        problem = problems.Problem(str(exc.detail))
        problem.status_code = exc.status_code
        return problem
    logger.error("unhandled exception", exc_info=exc)
    if settings.DEBUG:
        return problems.InternalError(f"{type(exc).__name__}: {exc}")
    return problems.InternalError()


def _validation_problem(detail) -> problems.ValidationFailed:
    errors = _field_errors(detail)
    if isinstance(errors, list):
        errors = {"non_field_errors": errors}
    field, messages = next(iter(errors.items()), ("", []))
    first = messages[0] if isinstance(messages, list) and messages else messages
    summary = first if field == "non_field_errors" else f"{field}: {first}"
    return problems.ValidationFailed(f"Invalid input. {summary}".strip(), errors=errors)


def _field_errors(detail) -> dict | list:
    """Flatten DRF's ErrorDetail structures into plain JSON (field → [messages])."""
    if isinstance(detail, dict):
        return {str(key): _field_errors(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [str(item) for item in detail]
        return [_field_errors(item) for item in detail]
    return [str(detail)]
