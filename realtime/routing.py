"""WebSocket routes: the one live endpoint of SPEC §7 (``/ws/``, also without the slash)."""

from django.urls import re_path

from realtime.consumers import LiveConsumer


async def unknown_path(scope, receive, send):
    """Any other WebSocket path: the handshake is refused (the server answers HTTP 403), as
    for a refused origin. Without this route Channels' router raises for the path, which the
    server logs as an error with its traceback and answers 500."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close"})


websocket_urlpatterns = [
    re_path(r"^ws/?$", LiveConsumer.as_asgi()),
    re_path(r"", unknown_path),
]
