"""ASGI entry point: HTTP through Django, WebSockets through Channels at ``/ws/``, and the MCP
streamable HTTP transport at ``/mcp`` (mcp_tools.http).

Serving processes (``manage.py serve`` or ``daphne config.asgi:application``) import this
module; background services (embedded gRPC servers, market feed, outbox) are started by the
``serve`` command, never from here or from ``AppConfig.ready()``.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.handlers import get_asgi_application

# Set up Django (apps, settings) before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from config.limits import BodyLimitASGIMiddleware  # noqa: E402
from mcp_tools.http import mcp_http_application  # noqa: E402
from realtime.auth import TokenAuthMiddlewareStack  # noqa: E402
from realtime.origins import WebSocketOriginValidator  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # /mcp: the MCP tools (mcp_tools.http); the rest is Django, which reads at most
        # DATA_UPLOAD_MAX_MEMORY_SIZE of a body (chunked ones too).
        "http": URLRouter(
            [
                re_path(r"^mcp/?$", mcp_http_application),
                re_path(r"", BodyLimitASGIMiddleware(django_asgi_app)),
            ]
        ),
        # Another site's page cannot open the socket with the user's cookie (realtime.origins).
        "websocket": WebSocketOriginValidator(
            TokenAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
