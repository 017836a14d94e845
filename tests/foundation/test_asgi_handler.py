"""The HTTP handler (config/handlers.py): each request's synchronous part runs in one of
SYNC_REQUEST_SLOTS long-lived threads, with its request_started/request_finished, as a WSGI
server would run it, and whatever the request opened is closed even when the client leaves."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.core import signals

from config.handlers import get_asgi_application
from tests.asgi import http_scope
from tests.foundation import asgi_urls

# The request threads outlive a test, and close_old_connections at a request's start checks the
# connection an earlier test left in that thread.
pytestmark = [
    pytest.mark.urls("tests.foundation.asgi_urls"),
    pytest.mark.django_db(transaction=True),
]


async def _get(application, path: str) -> tuple[int, bytes]:
    communicator = ApplicationCommunicator(application, http_scope(path))
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    body = b""
    while True:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(5)
    return start["status"], body


@pytest.fixture
def signal_threads():
    """The threads request_started and request_finished ran in, in order."""
    seen: list[tuple[str, int]] = []

    def started(**_):
        seen.append(("started", threading.get_ident()))

    def finished(**_):
        seen.append(("finished", threading.get_ident()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    yield seen
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


async def test_requests_run_in_a_bounded_set_of_long_lived_threads(signal_threads):
    application = get_asgi_application()
    requests = 3 * settings.SYNC_REQUEST_SLOTS

    # when requests arrive, several at a time
    answers = await asyncio.gather(*(_get(application, "/thread") for _ in range(requests)))

    # then each was served off the event loop, by at most SYNC_REQUEST_SLOTS threads in all
    assert {status for status, _ in answers} == {200}
    view_threads = [int(body) for _, body in answers]
    assert threading.get_ident() not in view_threads
    assert len(set(view_threads)) <= settings.SYNC_REQUEST_SLOTS
    # and each request's request_started/request_finished ran in a thread that served it
    assert len(signal_threads) == 2 * requests
    assert {ident for _, ident in signal_threads} == set(view_threads)


# Django warns that a synchronous iterator is consumed in a thread under ASGI: the point here.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
async def test_a_streamed_body_is_sent_whole_then_closed(signal_threads):
    application = get_asgi_application()

    status, body = await _get(application, "/stream")

    assert (status, body) == (200, b"first second")
    # request_finished: the response was closed, in a request thread, once it had been sent
    assert [kind for kind, _ in signal_threads] == ["started", "finished"]
    assert signal_threads[1][1] != threading.get_ident()


async def test_a_request_whose_client_left_is_still_closed(signal_threads):
    application = get_asgi_application()
    asgi_urls.release.clear()
    communicator = ApplicationCommunicator(application, http_scope("/slow"))
    await communicator.send_input({"type": "http.request", "body": b""})
    try:
        # given a request still in its view
        for _ in range(100):
            if signal_threads:
                break
            await asyncio.sleep(0.02)
        assert [kind for kind, _ in signal_threads] == ["started"]

        # when the client goes away while the view still runs, and the view then returns
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(5)
    finally:
        asgi_urls.release.set()

    # then nothing was sent, and the request was still closed (its connections handed back)
    assert await communicator.receive_nothing(0.2)
    for _ in range(100):
        if len(signal_threads) == 2:
            break
        await asyncio.sleep(0.02)
    assert [kind for kind, _ in signal_threads] == ["started", "finished"]
