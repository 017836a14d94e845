"""Errors raised by the gRPC client wrappers; a raw `grpc.RpcError` never escapes them.

| class                 | gRPC status codes                                                 |
|-----------------------|-------------------------------------------------------------------|
| RemoteNotFound        | NOT_FOUND                                                         |
| RemoteConflict        | FAILED_PRECONDITION, ALREADY_EXISTS, ABORTED                      |
| RemoteInvalidArgument | INVALID_ARGUMENT, OUT_OF_RANGE                                    |
| ServiceUnavailable    | everything else: UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN,         |
|                       | INTERNAL, RESOURCE_EXHAUSTED, UNIMPLEMENTED, ... and a response   |
|                       | that cannot be parsed (the service is unusable: fail closed)      |
"""

from __future__ import annotations

import grpc


class GrpcClientError(Exception):
    """A call to a gRPC dependency failed.

    `service` is "metering" or "oversight", `method` the RPC name, `code` the gRPC status
    name (e.g. "UNAVAILABLE"), `detail` the server's or the transport's message.
    """

    def __init__(self, *, service: str, method: str, code: str, detail: str) -> None:
        self.service = service
        self.method = method
        self.code = code
        self.detail = detail
        super().__init__(f"{service}.{method} failed with {code}: {detail}")


class ServiceUnavailable(GrpcClientError):
    """The service is down, too slow, broken, or answered something unusable."""


class RemoteNotFound(GrpcClientError):
    """The service does not know the object the call names."""


class RemoteConflict(GrpcClientError):
    """The call conflicts with the object's current state (e.g. already decided)."""


class RemoteInvalidArgument(GrpcClientError):
    """The service refused the call's arguments."""


_CLASS_BY_CODE: dict[grpc.StatusCode, type[GrpcClientError]] = {
    grpc.StatusCode.NOT_FOUND: RemoteNotFound,
    grpc.StatusCode.FAILED_PRECONDITION: RemoteConflict,
    grpc.StatusCode.ALREADY_EXISTS: RemoteConflict,
    grpc.StatusCode.ABORTED: RemoteConflict,
    grpc.StatusCode.INVALID_ARGUMENT: RemoteInvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: RemoteInvalidArgument,
}


def error_from_rpc_error(service: str, method: str, error: grpc.RpcError) -> GrpcClientError:
    """Map a `grpc.RpcError` to the matching `GrpcClientError` subclass."""
    code = error.code() if hasattr(error, "code") else None
    detail = error.details() if hasattr(error, "details") else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    error_class = _CLASS_BY_CODE.get(code, ServiceUnavailable)
    return error_class(service=service, method=method, code=code.name, detail=detail or "")
