"""``serve`` keeps autobahn from colouring the arguments of debug messages it does not log."""

from __future__ import annotations

import click
import pytest
from autobahn.websocket import protocol

from config.management.commands.serve import _plain_websocket_log_arguments


@pytest.fixture
def restored():
    helpers = protocol.hltype, protocol.hlval
    yield
    protocol.hltype, protocol.hlval = helpers


def test_the_frame_path_formats_without_click(restored, monkeypatch):
    # given serve's setup, and click unable to style anything
    _plain_websocket_log_arguments()

    def no_style(*args, **kwargs):
        raise AssertionError("click.style called")

    monkeypatch.setattr(click, "style", no_style)
    # then the helpers of the protocol's debug messages still give their text
    assert protocol.hltype(protocol.WebSocketProtocol.sendData) == "<WebSocketProtocol.sendData>"
    assert protocol.hlval(1234) == "1234"
    assert protocol.hlval("tcp:127.0.0.1:5000", color="green", bold=False) == "tcp:127.0.0.1:5000"
