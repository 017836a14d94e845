"""Start the reference metering and oversight servers, each with `grpc.health.v1`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpc_clients._generated.creto.metering.v1 import metering_pb2_grpc
from grpc_clients._generated.creto.oversight.v1 import oversight_pb2_grpc

from . import metering, oversight
from ._common import GarbageInterceptor

logger = logging.getLogger("reference_services")

MAX_WORKERS = 16
# gRPC sets SO_REUSEPORT by default, which lets a second server bind a taken port silently;
# turning it off makes a port clash fail loudly.
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}


@dataclass
class ReferenceServices:
    """Handle on the running servers. Addresses are dialable (wildcard hosts → loopback).

    A service started with address None is not running: its servicer, port and address are None.
    """

    metering: metering.MeteringServicer | None
    oversight: oversight.OversightServicer | None
    metering_port: int | None
    oversight_port: int | None
    metering_address: str | None
    oversight_address: str | None
    _running: list[_Running]

    def stop(self, grace: float = 1.0) -> None:
        """Stop the servers, letting in-flight calls finish for up to `grace` seconds."""
        for running in self._running:
            running.health.enter_graceful_shutdown()
        events = [running.server.stop(grace) for running in self._running]
        for event in events:
            event.wait(grace + 1.0)


@dataclass
class _Running:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    address: str


def _serve(servicer, add_to_server, service_name: str, address: str) -> _Running:
    server = grpc.server(
        ThreadPoolExecutor(max_workers=MAX_WORKERS),
        options=SERVER_OPTIONS,
        interceptors=[GarbageInterceptor(servicer, service_name)],
    )
    add_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"{service_name}: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"{service_name}: cannot listen on {address}")
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    server.start()
    host = address.rsplit(":", 1)[0]
    logger.info("%s listening on %s:%d", service_name, host, port)
    return _Running(server, health_servicer, port, f"{_WILDCARD_HOSTS.get(host, host)}:{port}")


def start_reference_services(
    metering_address: str | None = "127.0.0.1:0",
    oversight_address: str | None = "127.0.0.1:0",
    *,
    metering_config: Mapping[str, tuple[int, str]] | None = None,
    oversight_config: Mapping[str, str] | None = None,
    oversight_extensions: bool = True,
) -> ReferenceServices:
    """Start the servers (port 0 picks a free port; None skips that service); return a handle.

    `metering_config` is the default limits `{metric_code: (limit, period)}` (see
    `reference_services.metering`); `oversight_config` overrides the default policy
    parameters (see `reference_services.oversight`); `oversight_extensions=False` serves only
    Creto's standard oversight rpcs (no `CancelRequest`). State is in memory. Raises OSError when
    an address cannot be bound; nothing is left running then.
    """
    metering_servicer = oversight_servicer = None
    metering_running = oversight_running = None
    running: list[_Running] = []
    try:
        if metering_address is not None:
            metering_servicer = metering.MeteringServicer(metering_config)
            metering_running = _serve(
                metering_servicer,
                metering_pb2_grpc.add_MeteringServiceServicer_to_server,
                metering.SERVICE_NAME,
                metering_address,
            )
            running.append(metering_running)
        if oversight_address is not None:
            oversight_servicer = oversight.OversightServicer(
                oversight_config, extensions=oversight_extensions
            )
            oversight_running = _serve(
                oversight_servicer,
                oversight_pb2_grpc.add_OversightServiceServicer_to_server,
                oversight.SERVICE_NAME,
                oversight_address,
            )
            running.append(oversight_running)
    except BaseException:
        for started in running:
            started.server.stop(0).wait()
        raise
    return ReferenceServices(
        metering=metering_servicer,
        oversight=oversight_servicer,
        metering_port=metering_running.port if metering_running else None,
        oversight_port=oversight_running.port if oversight_running else None,
        metering_address=metering_running.address if metering_running else None,
        oversight_address=oversight_running.address if oversight_running else None,
        _running=running,
    )
