"""The ASGI handler that serves HTTP: Django's, with the middleware chain and the view run in
one worker thread per request.

Django's stock ``ASGIHandler`` builds the middleware chain for async. Every middleware built on
``MiddlewareMixin`` (Security, Session, Common, CSRF, Auth, Messages, ...) then calls each of its
``process_request``/``process_response`` hooks through ``sync_to_async``, one thread hop each,
and a sync-only middleware in the chain hops back to the event loop for the layers beneath it.
With this project's stack that was eight hops per request before the (synchronous) view ran.

Every view and middleware here is synchronous, so this handler builds the chain as the WSGI
handler does and runs it, view included, with one ``sync_to_async`` per request. It keeps
``thread_sensitive=True``: inside the request's ``ThreadSensitiveContext`` (opened by
``ASGIHandler.__call__``) the chain runs in the same thread as the ``request_started`` and
``request_finished`` receivers, so the database connection the request used is the one
``close_old_connections`` hands back to the pool. An async view, should one be added, still
works: the sync chain calls it through ``async_to_sync``.

At most ``SYNC_REQUEST_SLOTS`` requests of a process run their synchronous part at once; the
others wait on the event loop, where waiting costs nothing. Python runs one thread at a time,
so more threads than that only contend for the interpreter lock and for database connections:
on the 2-core benchmark machine, 64 concurrent orders in 64 threads were slower than the same
orders 8 at a time (README, "Performance").
"""

from __future__ import annotations

import asyncio

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self):
        super().__init__()
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        async with self._slots_of_this_loop():
            return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    def _slots_of_this_loop(self) -> asyncio.Semaphore:
        # A semaphore belongs to one event loop; a server has one, tests start several.
        loop = asyncio.get_running_loop()
        if self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(settings.SYNC_REQUEST_SLOTS)
            self._slots_loop = loop
        return self._slots


def get_asgi_application() -> SyncChainASGIHandler:
    """Like ``django.core.asgi.get_asgi_application``, with the handler above."""
    django.setup(set_prefix=False)
    return SyncChainASGIHandler()
