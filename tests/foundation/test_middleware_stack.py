"""The middleware stack runs synchronously under ASGI, as under WSGI: its innermost middleware
declares no async support (``async_capable``, Django's documented flag), so Django uses every
middleware around it in its synchronous mode, and a request's chain runs in one worker thread
(``manage.py serve``) instead of hopping to the event loop at each hook."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string


def test_the_innermost_middleware_is_synchronous_only():
    innermost = import_string(settings.MIDDLEWARE[-1])
    assert getattr(innermost, "sync_capable", True) is True
    assert getattr(innermost, "async_capable", False) is False


def test_every_middleware_can_run_synchronously():
    for path in settings.MIDDLEWARE:
        assert getattr(import_string(path), "sync_capable", True) is True, path
