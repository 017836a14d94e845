"""The ASGI handler that serves HTTP: Django's, with each request's synchronous part run in one
hop to a fixed pool of worker threads.

Django's stock ``ASGIHandler`` builds the middleware chain for async. Every middleware built on
``MiddlewareMixin`` (Security, Session, Common, CSRF, Auth, Messages, ...) then calls each of its
``process_request``/``process_response`` hooks through ``sync_to_async``, one thread hop each,
and a sync-only middleware in the chain hops back to the event loop for the layers beneath it.
It also opens a ``ThreadSensitiveContext`` per request, i.e. a new thread for every request,
with a new database connection wrapper, and hops to it three times: for ``request_started``,
for the chain and for ``response.close()`` (``request_finished``).

Every view and middleware here is synchronous, so this handler builds the chain as the WSGI
handler does and runs, in one hop to one of ``SYNC_REQUEST_SLOTS`` long-lived threads, what a
WSGI server would run for the request: ``request_started``, the chain and the view, and, for a
response already in memory, ``close()`` with its ``request_finished``. So a request's database
work, the ``close_old_connections`` receivers included, happens in one thread, as under WSGI;
``CONN_MAX_AGE``, the pool and ``ATOMIC_REQUESTS`` behave as they do there. A streaming response
(a static file) is closed in the same pool once it has been sent. An async view, should one be
added, still works: the sync chain calls it through ``async_to_sync``.

The pool bounds the requests of a process that run their synchronous part at once; the others
wait on the event loop, where waiting costs nothing. Python runs one thread at a time, so more
threads than that only contend for the interpreter lock and for database connections: on the
2-core benchmark machine, 64 concurrent orders in 64 threads were slower than the same orders
8 at a time (README, "Performance").
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing

import django
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import set_script_prefix

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def request_pool() -> ThreadPoolExecutor:
    """The process's request threads (created on first use, ``SYNC_REQUEST_SLOTS`` of them).

    One pool serves every event loop of the process: a server has one loop, tests start many.
    """
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=settings.SYNC_REQUEST_SLOTS, thread_name_prefix="http"
                )
    return _pool


class _RequestProcessed(Exception):
    """Ends the task group once the response is sent (as Django's handler does)."""


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        # No ThreadSensitiveContext: the request's synchronous part runs in a pool thread.
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        with closing(body_file):
            loop = asyncio.get_running_loop()
            work = request_pool().submit(self._respond, loop, scope, body_file)
            response = None
            try:
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self.listen_for_disconnect(receive))
                        response = await asyncio.wrap_future(work)
                        await self.send_response(response, send)
                        raise _RequestProcessed
                except* (_RequestProcessed, RequestAborted):
                    pass
            except BaseExceptionGroup as exception_group:
                if len(exception_group.exceptions) == 1:
                    raise exception_group.exceptions[0] from None
                raise
            if response is None:
                # The client went away first: close what the request produces, when it does.
                work.add_done_callback(_close_streaming)
            elif response.streaming:
                await asyncio.wrap_future(request_pool().submit(response.close))

    def _respond(self, loop, scope, body_file):
        """The request's synchronous part, in a pool thread: what a WSGI server would run."""
        # As asgiref's sync_to_async does: async_to_sync in this thread (live events sent on
        # commit, an async view) runs its coroutine on the serving loop, not on a new loop in
        # a new thread.
        SyncToAsync.threadlocal.main_event_loop = loop
        SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            # ASGI servers chunk the body themselves.
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if not response.streaming:
            # The content is in memory: request_finished (the connection goes back) before the
            # bytes are sent, in the thread that used the connection.
            response.close()
        return response


def _close_streaming(work: Future) -> None:
    if work.cancelled() or work.exception() is not None:
        return
    response = work.result()
    if response.streaming:
        response.close()


def get_asgi_application() -> SyncChainASGIHandler:
    """Like ``django.core.asgi.get_asgi_application``, with the handler above."""
    django.setup(set_prefix=False)
    return SyncChainASGIHandler()
