"""The problem catalogue: one exception class per RFC 7807 problem type of SPEC §6.

Domain code raises these (``raise InsufficientFunds(required=..., available=...)``); the
handler in ``api.exceptions`` renders them as ``application/problem+json``. Each class is
registered with drf-problems, whose ``/problems/<slug>/`` page describes it, so every ``type``
URL resolves.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_problems.utils import register
from rest_framework import exceptions, status


class Problem(exceptions.APIException):
    """Base of every problem type. ``extensions`` become extra members of the document."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "internal-error"
    title = "Internal Server Error"
    default_detail = "An unexpected error occurred."
    description = "An unexpected error occurred on the server."
    # Seconds a client should wait before retrying; sent as Retry-After when set.
    retry_after: int | None = None
    code = "internal-error"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None, **extensions):
        super().__init__(detail=detail, code=self.default_code)
        if retry_after is not None:
            self.retry_after = retry_after
        self.extensions: dict[str, Any] = {
            key: _jsonable(value) for key, value in extensions.items() if value is not None
        }

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # drf-problems reads `code` (class and instance) to build and resolve the type URL.
        cls.code = cls.default_code


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return value


@register
class ValidationFailed(Problem):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "validation-error"
    title = "Validation Error"
    default_detail = "The request is invalid; see errors for each field."
    description = "The request body or query failed validation. `errors` maps fields to messages."


@register
class Unauthorized(Problem):
    status_code = status.HTTP_401_UNAUTHORIZED
    default_code = "unauthorized"
    title = "Unauthorized"
    default_detail = "Authentication credentials were not provided or are invalid."
    description = "Send `Authorization: Token <key>` (POST /api/v1/auth/token) or a session."


@register
class InsufficientFunds(Problem):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_code = "insufficient-funds"
    title = "Insufficient Funds"
    default_detail = "The agent's available cash does not cover this order."
    description = (
        "A buy's notional exceeds available cash. `required` and `available` say by how much."
    )


@register
class Forbidden(Problem):
    status_code = status.HTTP_403_FORBIDDEN
    default_code = "forbidden"
    title = "Forbidden"
    default_detail = "You do not have permission to perform this action."
    description = "The caller is authenticated but not allowed to do this (e.g. not an operator)."


@register
class SelfApproval(Problem):
    status_code = status.HTTP_403_FORBIDDEN
    default_code = "self-approval"
    title = "Self-Approval Forbidden"
    default_detail = "An operator may not decide a request for an agent they own."
    description = "Approvals need someone other than the agent's owner (four-eyes principle)."


@register
class NotFound(Problem):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "not-found"
    title = "Not Found"
    default_detail = "The requested resource was not found."
    description = "No such resource, or it belongs to someone else."


@register
class MethodNotAllowed(Problem):
    status_code = status.HTTP_405_METHOD_NOT_ALLOWED
    default_code = "method-not-allowed"
    title = "Method Not Allowed"
    default_detail = "This method is not allowed on this resource."
    description = "The resource exists but does not support this HTTP method."


@register
class NotAcceptable(Problem):
    status_code = status.HTTP_406_NOT_ACCEPTABLE
    default_code = "not-acceptable"
    title = "Not Acceptable"
    default_detail = "The requested response format is not available."
    description = "The API answers in JSON only."


@register
class Conflict(Problem):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    title = "Conflict"
    default_detail = "The resource is not in a state that allows this action."
    description = "The action conflicts with the resource's current state."


@register
class AgentNotActive(Problem):
    status_code = status.HTTP_409_CONFLICT
    default_code = "agent-not-active"
    title = "Agent Not Active"
    default_detail = "The agent is not active."
    description = "Paused, suspended or terminated agents cannot place orders."


@register
class IdempotencyConflict(Problem):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency-conflict"
    title = "Idempotency Key Reused"
    default_detail = "This idempotency key was already used with a different request."
    description = "An Idempotency-Key or client_order_id may only be replayed with the same body."


@register
class PayloadTooLarge(Problem):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload-too-large"
    title = "Payload Too Large"
    default_detail = "The request body exceeds the 10 MB limit."
    description = "Request bodies are limited to 10 MB."


@register
class UnsupportedMediaType(Problem):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_code = "unsupported-media-type"
    title = "Unsupported Media Type"
    default_detail = "Send JSON with Content-Type: application/json."
    description = "The API accepts JSON bodies only."


@register
class InsufficientPosition(Problem):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "insufficient-position"
    title = "Insufficient Position"
    default_detail = "The agent does not hold enough unreserved shares to sell."
    description = "A sell needs an unreserved position at least as large as its quantity."


@register
class PositionLimit(Problem):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "position-limit"
    title = "Position Limit Exceeded"
    default_detail = "The position after this order would exceed the agent's position limit."
    description = "A position may not exceed `max_position_fraction` of the agent's budget."


@register
class QuotaExceeded(Problem):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "quota-exceeded"
    title = "Quota Exceeded"
    default_detail = "The agent's usage quota for this period is exhausted."
    description = "The metering service refused the usage. `limit` and `remaining` tell the quota."
    retry_after = 60


@register
class RateLimited(Problem):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "rate-limited"
    title = "Too Many Requests"
    default_detail = "Request rate limit exceeded."
    description = "Too many requests from this client; retry after `Retry-After` seconds."
    retry_after = 60


@register
class InternalError(Problem):
    pass


@register
class ServiceUnavailable(Problem):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service-unavailable"
    title = "Service Unavailable"
    default_detail = "A required service is unavailable; nothing was changed. Retry later."
    description = "The metering or oversight service could not be reached within its deadline."
    retry_after = 5
