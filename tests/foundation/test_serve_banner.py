"""The start-up banner says which gRPC services the server started and which it found."""

from __future__ import annotations

import re
from io import StringIO

import pytest

from runtime.embedded import start_embedded_services
from runtime.management.commands.serve import Command
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


def test_the_banner_calls_a_service_the_server_did_not_start_external(settings, reference_services):
    # given: oversight already served elsewhere, nothing on the metering address
    settings.EMBEDDED_SERVICES = True
    settings.METERING_GRPC_ADDRESS = f"127.0.0.1:{free_port()}"
    settings.OVERSIGHT_GRPC_ADDRESS = reference_services.oversight_address
    services = start_embedded_services()
    try:
        assert services is not None and services.oversight_address is None
        out = StringIO()

        # when
        Command(stdout=out)._banner("127.0.0.1", 8000, services)
    finally:
        services.stop(grace=0)

    # then
    banner = out.getvalue()
    assert re.search(r"Metering gRPC:\s+\S+ \(embedded\)", banner), banner
    assert re.search(r"Oversight gRPC:\s+\S+ \(external\)", banner), banner


def test_the_banner_prints_the_request_limits(settings):
    # given
    settings.RATE_LIMIT_ENABLED = True
    settings.RATE_LIMIT = "100/15m"
    settings.TRADE_RATE_LIMIT = "600/m"
    out = StringIO()

    # when
    Command(stdout=out)._banner("127.0.0.1", 8000, None)

    # then
    assert re.search(
        r"Rate limits:\s+100 requests per 15 minutes per address \(anonymous\) and per user "
        r"\(signed in\); 600 orders per minute per user",
        out.getvalue(),
    ), out.getvalue()
