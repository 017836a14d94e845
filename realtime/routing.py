"""WebSocket routes: the one live endpoint of SPEC §7 (``/ws/``, also without the slash)."""

from django.urls import re_path

from realtime.consumers import LiveConsumer

websocket_urlpatterns = [
    re_path(r"^ws/?$", LiveConsumer.as_asgi()),
]
