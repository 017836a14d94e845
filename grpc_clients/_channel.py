"""One channel per client, a deadline on every call, errors mapped, calls observed."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from .errors import GrpcClientError, ServiceUnavailable, error_from_rpc_error

logger = logging.getLogger("grpc_clients")

REQUEST_ID_METADATA_KEY = "x-request-id"

CallHook = Callable[[str, str, str, float], None]
RequestIdProvider = Callable[[], str | None]

# Retries happen inside gRPC, on UNAVAILABLE only (the call never reached a server that could
# have acted on it), and only for methods that are safe to repeat.
RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


class _Budget:
    """A shared deadline that starts with the first call made under it (see `deadline_budget`)."""

    __slots__ = ("deadline", "outer", "seconds")

    def __init__(self, seconds: float, outer: _Budget | None):
        self.seconds = seconds
        self.outer = outer
        self.deadline: float | None = None

    def remaining(self, now: float) -> float:
        if self.deadline is None:
            self.deadline = now + self.seconds
        left = self.deadline - now
        return left if self.outer is None else min(left, self.outer.remaining(now))


# The budget every call of the current operation shares; None: each call has its own timeout.
_budget: ContextVar[_Budget | None] = ContextVar("grpc_budget", default=None)


@contextmanager
def deadline_budget(seconds: float) -> Iterator[None]:
    """Make every gRPC call inside share one deadline of `seconds`, from the first call on.

    An operation that calls several services one after the other (a new order asks metering,
    then oversight) then answers within `seconds` of gRPC time in all, not `seconds` per call:
    a call's timeout is the smaller of its own and what is left, and a call with nothing left
    fails at once with DEADLINE_EXCEEDED (ServiceUnavailable). The clock starts at the first
    call, not at entry, so time spent waiting for a database lock before it is not charged to
    the dependencies. Nested budgets only ever shrink it.
    """
    token = _budget.set(_Budget(seconds, _budget.get()))
    try:
        yield
    finally:
        _budget.reset(token)


class CallSlots:
    """At most ``limit`` gRPC calls of this process in flight at once (0: no limit).

    A call that finds every slot taken waits up to ``wait_seconds`` (never longer than its own
    timeout) for one to be freed, then fails with RESOURCE_EXHAUSTED (ServiceUnavailable, a
    503 with ``Retry-After``) without reaching the service. Healthy calls free their slots
    within milliseconds, so a busy process queues its calls briefly instead of refusing
    orders; a slow dependency holds at most ``limit`` of the threads that serve requests for
    its deadline, and any other thread for at most ``wait_seconds``, so they stay free for
    liveness probes and reads. The clients of one process share one ``CallSlots``.
    """

    def __init__(self, limit: int, wait_seconds: float = 0.0) -> None:
        self.limit = limit
        self.wait_seconds = max(wait_seconds, 0.0)
        self._free = threading.BoundedSemaphore(limit) if limit > 0 else None

    @contextmanager
    def held(self, service: str, method: str, timeout: float) -> Iterator[None]:
        if self._free is None:
            yield
            return
        wait = min(self.wait_seconds, timeout)
        if wait > 0:
            acquired = self._free.acquire(timeout=wait)
        else:
            acquired = self._free.acquire(blocking=False)
        if not acquired:
            raise ServiceUnavailable(
                service=service,
                method=method,
                code=grpc.StatusCode.RESOURCE_EXHAUSTED.name,
                detail=f"all {self.limit} call slots of this process are waiting on services",
            )
        try:
            yield
        finally:
            self._free.release()


def channel_options(service_name: str, idempotent_methods: Iterable[str]) -> list[tuple[str, Any]]:
    service_config = {
        "methodConfig": [
            {
                "name": [{"service": service_name, "method": m} for m in idempotent_methods],
                "retryPolicy": RETRY_POLICY,
            }
        ]
    }
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config)),
        # Reconnect quickly after the service comes back instead of backing off for minutes.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def to_datetime(message: Any, field: str) -> datetime | None:
    """An aware UTC datetime from a Timestamp field, or None when the field is unset."""
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)


def to_timestamp(moment: datetime) -> Timestamp:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    timestamp = Timestamp()
    timestamp.FromDatetime(moment.astimezone(UTC))
    return timestamp


class ServiceChannel:
    """A channel to one service plus the call discipline every wrapper method follows."""

    def __init__(
        self,
        *,
        service: str,
        service_name: str,
        address: str,
        timeout: float,
        idempotent_methods: Iterable[str],
        request_id_provider: RequestIdProvider | None,
        on_call: CallHook | None,
        call_slots: CallSlots | None = None,
    ) -> None:
        self.service = service
        self.address = address
        self.timeout = timeout
        self._request_id_provider = request_id_provider
        self._on_call = on_call
        self._call_slots = call_slots or CallSlots(0)
        self.channel = grpc.insecure_channel(
            address, options=channel_options(service_name, idempotent_methods)
        )

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self._request_id_provider is None:
            return ()
        request_id = self._request_id_provider()
        return ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()

    def call[T](
        self,
        method: str,
        invoke: Callable[..., Any],
        request: Any,
        convert: Callable[[Any], T],
    ) -> T:
        """Invoke `invoke(request)` with the deadline and metadata, then `convert` the reply.

        A streaming reply is consumed inside the deadline by `convert`. Every failure is
        raised as a `GrpcClientError`; a reply `convert` cannot read is ServiceUnavailable, and
        so is a call that finds no free slot (`CallSlots`).
        """
        started = time.monotonic()
        code = "OK"
        timeout = self.timeout
        budget = _budget.get()
        if budget is not None:
            timeout = min(timeout, budget.remaining(started))
        try:
            self._check_time_left(method, timeout)
            try:
                with self._call_slots.held(self.service, method, timeout):
                    # The wait for a slot is part of the call's deadline.
                    timeout -= time.monotonic() - started
                    self._check_time_left(method, timeout)
                    reply = invoke(request, timeout=timeout, metadata=self._metadata())
                    return convert(reply)
            except grpc.RpcError as exc:
                raise error_from_rpc_error(self.service, method, exc) from exc
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise ServiceUnavailable(
                    service=self.service,
                    method=method,
                    code=grpc.StatusCode.INTERNAL.name,
                    detail=f"unreadable response: {exc}",
                ) from exc
        except GrpcClientError as exc:
            code = exc.code
            raise
        finally:
            self._observe(method, code, time.monotonic() - started)

    def _check_time_left(self, method: str, timeout: float) -> None:
        if timeout <= 0:
            raise ServiceUnavailable(
                service=self.service,
                method=method,
                code=grpc.StatusCode.DEADLINE_EXCEEDED.name,
                detail="the operation's deadline was spent before this call",
            )

    def _observe(self, method: str, code: str, seconds: float) -> None:
        if self._on_call is None:
            return
        try:
            self._on_call(self.service, method, code, seconds)
        except Exception:  # a metrics hook must never break a call
            logger.exception("gRPC call hook failed for %s.%s", self.service, method)

    def close(self) -> None:
        self.channel.close()


class ServiceClient:
    """Base of the service wrappers: one `ServiceChannel` and the generated stub on it.

    Subclasses name their service (`SERVICE`, `SERVICE_NAME`), the methods that are safe to
    retry (`IDEMPOTENT_METHODS`) and the generated stub class (`STUB`).
    """

    SERVICE: str
    SERVICE_NAME: str
    IDEMPOTENT_METHODS: tuple[str, ...]
    STUB: Callable[[grpc.Channel], Any]

    def __init__(
        self,
        address: str,
        *,
        timeout: float,
        request_id_provider: RequestIdProvider | None = None,
        on_call: CallHook | None = None,
        call_slots: CallSlots | None = None,
    ) -> None:
        self._channel = ServiceChannel(
            service=self.SERVICE,
            service_name=self.SERVICE_NAME,
            address=address,
            timeout=timeout,
            idempotent_methods=self.IDEMPOTENT_METHODS,
            request_id_provider=request_id_provider,
            on_call=on_call,
            call_slots=call_slots,
        )
        self._stub = self.STUB(self._channel.channel)

    @property
    def address(self) -> str:
        return self._channel.address

    def close(self) -> None:
        self._channel.close()
