"""ASGI entry point: WebSockets through Channels at ``/ws/``, the MCP streamable HTTP transport
at ``/mcp`` (mcp_tools.http), and HTTP through Django.

Production serves it with uvicorn (through the factory ``serving_application``) for the
WebSockets and ``/mcp`` (the rest of HTTP goes to gunicorn, ``config.wsgi``); ``manage.py
serve`` (``make run``) serves everything from it in one process. Background services
(embedded gRPC servers, jobs) are started by those commands, never from here or from
``AppConfig.ready()``.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Set up Django (apps, settings) before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from api.limits import BodyLimitASGIMiddleware  # noqa: E402
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


def serving_application():
    """The application as a serving process runs it (uvicorn ``--factory``): the objects
    loading made are left out of the garbage collector's collections first
    (``runtime.memory``)."""
    from runtime.memory import freeze_startup_objects

    freeze_startup_objects()
    return application
