"""What ``serve`` changes in daphne's WebSocket protocol (``config.websocket_server``)."""

from __future__ import annotations

import click
import pytest
from autobahn.websocket import protocol
from autobahn.websocket.protocol import TrafficStats
from daphne.ws_protocol import WebSocketFactory

from config import websocket_server


@pytest.fixture
def installed():
    saved = protocol.hltype, protocol.hlval, WebSocketFactory.protocol
    websocket_server.install()
    yield
    protocol.hltype, protocol.hlval, WebSocketFactory.protocol = saved


def test_the_frame_path_formats_log_arguments_without_click(installed, monkeypatch):
    # given click unable to style anything
    def no_style(*args, **kwargs):
        raise AssertionError("click.style called")

    monkeypatch.setattr(click, "style", no_style)
    # then the helpers of the protocol's debug messages still give their text
    assert protocol.hltype(protocol.WebSocketProtocol.sendData) == "<WebSocketProtocol.sendData>"
    assert protocol.hlval(1234) == "1234"
    assert protocol.hlval("tcp:127.0.0.1:5000", color="green", bold=False) == "tcp:127.0.0.1:5000"


class Transport:
    def __init__(self):
        self.written = b""

    def write(self, data):
        self.written += data


def open_protocol():
    factory = WebSocketFactory(server_class=None, server="test")
    connection = factory.buildProtocol(("127.0.0.1", 1))
    connection.transport = Transport()
    for attribute in connection.CONFIG_ATTRS:  # as autobahn's connectionMade does
        setattr(connection, attribute, getattr(factory, attribute))
    connection.state = connection.STATE_OPEN
    connection._perMessageCompress = None
    connection.send_queue = []
    connection.client_addr = ("127.0.0.1", 1)
    connection.trackedTimings = None
    connection.trafficStats = TrafficStats()
    connection.logFrames = connection.logOctets = False
    return connection


def test_a_send_with_its_frame_prepared_writes_the_same_bytes_as_its_text(installed):
    text = '{"type": "event", "event": "market.price", "seq": 7}'
    # when one connection is sent the text and another the same message with its frame prepared
    plain, prepared = open_protocol(), open_protocol()
    prepared.sendMessage = lambda *args, **kwargs: pytest.fail("the frame was built again")
    plain.handle_reply({"type": "websocket.send", "text": text})
    prepared.handle_reply(
        {
            "type": "websocket.send",
            "text": text,
            websocket_server.PREPARED_FRAME: websocket_server.prepared_frame(text),
        }
    )
    # then both wrote the same WebSocket frame
    assert prepared.transport.written == plain.transport.written
    assert plain.transport.written == bytes([0x81, len(text)]) + text.encode()
