"""Health checks of the gRPC dependencies through `grpc.health.v1`."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

METERING_SERVICE_NAME = "creto.metering.v1.MeteringService"
OVERSIGHT_SERVICE_NAME = "creto.oversight.v1.OversightService"


def check_health(address: str, service: str, *, timeout: float) -> bool:
    """True iff the server at `address` reports `service` SERVING within `timeout` seconds.

    Uses a short-lived channel of its own and never raises.
    """
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except Exception:  # a health check answers, it never raises
        return False
    return response.status == health_pb2.HealthCheckResponse.SERVING
