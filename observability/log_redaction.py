"""A logging filter that keeps credentials out of log output.

Django's ``django.request`` logger attaches the request to every 4xx/5xx record; a JSON
formatter renders it as ``<ASGIRequest: GET '/path?token=…'>``, query string and all, so a
token sent as ``?token=`` (the WebSocket's way to authenticate, or a client's mistake on an
HTTP URL) would be written to the logs. This filter gives the handler a copy of the record in
which the request is only its method and path, and in which ``token=``, ``password=``,
``Authorization: Token …`` and ``Cookie``-style values in the message are masked.
(Returning a new record from a handler filter, Python ≥ 3.12, leaves other handlers and the
original record untouched.)

``TracebackFilter`` keeps stack traces out of the same output outside DEBUG: a record logged
with an exception is written as one line that names the exception, without its traceback.
"""

from __future__ import annotations

import copy
import logging
import re

MASK = "[redacted]"
_SECRET_PATTERNS = [
    # query-string or form style: token=…, password=…, sessionid=…, csrftoken=…
    re.compile(r"(?i)\b(token|key|password|passwd|secret|sessionid|csrftoken|api_key)=[^&\s'\"]+"),
    # header style: Authorization: Token abc / Bearer abc
    re.compile(r"(?i)\b(Token|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
]


def redact(text: str) -> str:
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}={MASK}", text)
    return _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)} {MASK}", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> logging.LogRecord:
        clean = copy.copy(record)
        request = getattr(record, "request", None)
        if request is not None and not isinstance(request, str):
            method = getattr(request, "method", "") or ""
            path = getattr(request, "path", "") or ""
            clean.request = f"{method} {path}".strip()
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            clean.msg, clean.args = redacted, None
        if record.exc_text:
            clean.exc_text = redact(record.exc_text)
        return clean


class TracebackFilter(logging.Filter):
    """Without ``tracebacks`` (``LOG_TRACEBACKS``, on only with ``DEBUG`` by default), a record
    logged with an exception (``logger.exception``, ``exc_info=``) or a stack is handed on
    without them: its message ends with the exception's class and text instead, so the line
    still tells what failed, and no traceback (file paths, source lines, local names) reaches
    the log. Put it before ``RedactSecretsFilter``, which then masks the exception's text too."""

    def __init__(self, tracebacks: bool = False):
        super().__init__()
        self.tracebacks = tracebacks

    def filter(self, record: logging.LogRecord) -> bool | logging.LogRecord:
        if self.tracebacks or not (record.exc_info or record.exc_text or record.stack_info):
            return True
        clean = copy.copy(record)
        error = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if error is not None:
            name = f"{type(error).__module__}.{type(error).__qualname__}"
            text = str(error)
            clean.msg = (
                f"{record.getMessage()} [{name}: {text}]"
                if text
                else f"{record.getMessage()} [{name}]"
            )
            clean.args = None
        clean.exc_info = clean.exc_text = clean.stack_info = None
        return clean
