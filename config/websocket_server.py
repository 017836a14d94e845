"""What ``serve`` changes in daphne's WebSocket protocol (autobahn underneath), installed by
``install()`` before the server starts.

A live event watched by a thousand clients is one frame sent a thousand times. Per client,
daphne framed it anew (``sendMessage``: the UTF-8 encoding, the header, the frame checks), and
autobahn built the coloured arguments of a debug message nobody logs. Here:

- a ``websocket.send`` message may carry, besides its ``text``, the frame already built once
  for every connection of the process (``PREPARED_FRAME``: an autobahn ``PreparedMessage``,
  the library's object for broadcasting), which the protocol writes as it is. Another ASGI
  server, or Channels' test communicator, ignores the key and sends the ``text``;
- autobahn's two formatting helpers of its protocol module give the same text without the
  colours (four ``click.style`` calls per frame sent).
"""

from __future__ import annotations

from autobahn.websocket.protocol import PreparedMessage

# The key of a `websocket.send` message that carries its frame prepared (an ASGI extension of
# this project: servers that do not know it send the message's `text`).
PREPARED_FRAME = "trading_demo.prepared_frame"


def prepared_frame(text: str) -> PreparedMessage:
    """The WebSocket frame of ``text``, built once to be written to many connections."""
    return PreparedMessage(text.encode(), isBinary=False, applyMask=False, doNotCompress=False)


def install() -> None:
    """Use ``PreparedFrameProtocol`` for daphne's WebSockets and plain log arguments."""
    from autobahn.websocket import protocol
    from daphne.ws_protocol import WebSocketFactory

    WebSocketFactory.protocol = _prepared_frame_protocol()
    protocol.hltype = _plain_type
    protocol.hlval = _plain_value


def _prepared_frame_protocol():
    from daphne.ws_protocol import WebSocketProtocol

    class PreparedFrameProtocol(WebSocketProtocol):
        """daphne's protocol, writing a send's prepared frame when it carries one."""

        def handle_reply(self, message):
            prepared = message.get(PREPARED_FRAME)
            if (
                prepared is not None
                and message.get("type") == "websocket.send"
                and self.state == self.STATE_OPEN
            ):
                self.sendPreparedMessage(prepared)
                return
            super().handle_reply(message)

    return PreparedFrameProtocol


def _plain_type(obj) -> str:
    return f"<{getattr(obj, '__qualname__', type(obj).__qualname__)}>"


def _plain_value(value, color: str = "white", bold: bool = True) -> str:
    return f"{value}"
