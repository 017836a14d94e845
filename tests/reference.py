"""Reference gRPC services on ephemeral ports, for any test module.

    with running_reference_services() as services:
        client = MeteringClient(services.metering_address, timeout=1.0)

Fault tests slow or break a real server through its servicer:
`services.metering.delay_seconds = 2.0` makes every call wait before answering,
`services.oversight.fail_with = grpc.StatusCode.INTERNAL` makes every call fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from reference_services.server import ReferenceServices, start_reference_services


@contextmanager
def running_reference_services(**kwargs) -> Iterator[ReferenceServices]:
    """Start both reference services on 127.0.0.1 ephemeral ports; stop them afterwards.

    Keyword arguments go to `start_reference_services` (e.g. `metering_config=`).
    """
    services = start_reference_services(**kwargs)
    try:
        yield services
    finally:
        services.stop(grace=0)
