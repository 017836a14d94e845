"""The current request's id, carried across threads of one request with a ContextVar.

The id comes from the caller's ``X-Request-ID`` header or is generated; it is echoed in the
response, stamped on every log record and sent to both gRPC services as metadata.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Accept a caller's id only if it is short and printable: it ends up in logs and headers.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None):
    return _request_id.set(value)


def reset_request_id(token) -> None:
    _request_id.reset(token)


def accept_or_generate(raw: str | None) -> str:
    if raw and _VALID_ID.match(raw):
        return raw
    return uuid.uuid4().hex


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` to every record so formatters can always print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True
