"""Plumbing shared by the reference servicers: request-id logging, fault injection, time."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

REQUEST_ID_METADATA_KEY = "x-request-id"


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_timestamp(moment: datetime) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromDatetime(moment)
    return timestamp


def from_timestamp(timestamp: Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)


class ServicerBase:
    """Logs every call with its `x-request-id` and lets tests slow down or break the server.

    `delay_seconds` makes every call wait that long before answering (the wait ends early when
    the client has gone, so a slowed server still stops promptly); `fail_with` makes every call
    abort with that status code; `garbage` makes every answer bytes that are not a protobuf
    message (see `GarbageInterceptor`). All are plain attributes, meant to be set by fault
    tests on a running server; `calls_waiting` counts the calls held by `delay_seconds` right
    now, so that a test knows its clients are waiting on this server.
    """

    logger: logging.Logger

    def __init__(self) -> None:
        self.delay_seconds: float = 0.0
        self.fail_with: grpc.StatusCode | None = None
        self.garbage: bool = False
        self.calls_waiting: int = 0
        self._waiting_lock = threading.Lock()

    def _begin(self, method: str, context: grpc.ServicerContext) -> None:
        request_id = next(
            (
                value
                for key, value in context.invocation_metadata() or ()
                if key == REQUEST_ID_METADATA_KEY
            ),
            "-",
        )
        # Every call, at DEBUG: the server's access log already has one line per request.
        self.logger.debug("%s request_id=%s", method, request_id)
        delay = self.delay_seconds
        if delay > 0:
            deadline = time.monotonic() + delay
            with self._waiting_lock:
                self.calls_waiting += 1
            try:
                while context.is_active() and (remaining := deadline - time.monotonic()) > 0:
                    time.sleep(min(remaining, 0.05))
            finally:
                with self._waiting_lock:
                    self.calls_waiting -= 1
        failure = self.fail_with
        if failure is not None:
            context.abort(failure, f"injected failure: {failure.name}")


# Not a protobuf message: a field tag whose varint never ends.
GARBAGE = b"\xff\xff\xff\xff"


class GarbageInterceptor(grpc.ServerInterceptor):
    """While `servicer.garbage` is set, unary answers of the servicer's service are sent as
    `GARBAGE` instead of their serialized message: a client sees a reply it cannot parse."""

    def __init__(self, servicer: ServicerBase, service_name: str) -> None:
        self._servicer = servicer
        self._prefix = f"/{service_name}/"

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if (
            handler is None
            or not self._servicer.garbage
            or not handler_call_details.method.startswith(self._prefix)
            or handler.response_streaming
        ):
            return handler
        return handler._replace(response_serializer=lambda _message: GARBAGE)
