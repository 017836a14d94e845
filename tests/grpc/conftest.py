from __future__ import annotations

import pytest

from grpc_clients.metering import MeteringClient
from grpc_clients.oversight import OversightClient
from tests.reference import running_reference_services

CLIENT_TIMEOUT = 1.0


@pytest.fixture
def services():
    """A private pair of reference services for one test."""
    with running_reference_services() as running:
        yield running


@pytest.fixture
def metering_client(services):
    client = MeteringClient(services.metering_address, timeout=CLIENT_TIMEOUT)
    yield client
    client.close()


@pytest.fixture
def oversight_client(services):
    client = OversightClient(services.oversight_address, timeout=CLIENT_TIMEOUT)
    yield client
    client.close()
