"""Views for tests/foundation/test_asgi_handler.py: what thread serves a request, a streamed
body, and a view that waits for the test's go-ahead."""

import threading

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

release = threading.Event()


def thread_view(request):
    return HttpResponse(str(threading.get_ident()))


def stream_view(request):
    return StreamingHttpResponse(iter([b"first ", b"second"]))


def slow_view(request):
    release.wait(10)
    return HttpResponse("late")


urlpatterns = [
    path("thread", thread_view),
    path("stream", stream_view),
    path("slow", slow_view),
]
