"""``manage.py mcp``: the MCP server on stdio, for desktop MCP clients.

The owner's API token comes from ``--token`` or the ``TRADING_DEMO_TOKEN`` environment
variable (which keeps it out of the process list). Every tool call is a request of the REST
API made in this process as that owner (``mcp_tools.dispatch``), on the configured database
and channel layer: for live events to reach the WebSocket clients of a running server, both
must share a channel layer (``REDIS_URL``). stdout carries the protocol only; logs go to
stderr.
"""

import asyncio
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mcp_tools.dispatch import Caller
from mcp_tools.server import build_server

TOKEN_VARIABLE = "TRADING_DEMO_TOKEN"  # noqa: S105 - the variable's name, not a secret


def stdio_host() -> str:
    """A host name Django accepts (``ALLOWED_HOSTS``) for the calls of this process."""
    for host in settings.ALLOWED_HOSTS:
        if host != "*" and not host.startswith("."):
            return host
    return "localhost"


class Command(BaseCommand):
    help = "Serve the trading API as MCP tools on stdio, as the owner of an API token."

    def add_arguments(self, parser):
        parser.add_argument(
            "--token",
            default=os.environ.get(TOKEN_VARIABLE),
            help=f"The owner's API token (default: ${TOKEN_VARIABLE}).",
        )

    def handle(self, *args, token, **options):
        if not token:
            raise CommandError(f"Give the owner's API token: --token or ${TOKEN_VARIABLE}.")
        caller = Caller(
            token=token,
            # The calls come from this machine: the per-IP rate limit counts them as local.
            client_address="127.0.0.1",
            host=stdio_host(),
            scheme="https" if settings.SECURE_SSL_REDIRECT else "http",
        )
        asyncio.run(build_server(caller).run_stdio_async())
