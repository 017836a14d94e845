"""What the cyclic garbage collector of a serving process need not walk.

A serving process keeps, for its whole life, the objects that loading Django and the project
creates: modules, classes, the models' options, the URL patterns and the views they import,
the serializers' declared fields. They are about as many as everything its requests and
connections hold together, and Python's cyclic collector walks every tracked object in each
full (oldest-generation) collection while every thread of the process waits. A full
collection that walks them pauses every request and every WebSocket delivery of that
process for its duration, which is what the slowest answers of a busy process are made of.

``freeze_startup_objects`` finishes loading what the first request would otherwise load (the
URLconf, with every view module it includes), collects the garbage that loading left, and
moves every object still alive into the collector's permanent generation (``gc.freeze``):
later collections walk only what requests and connections create. Reference counting still
frees a frozen object as soon as nothing refers to it; only a reference cycle among frozen
objects would outlive its use, and these objects live as long as the process anyway.

Call it once per serving process, after the application is loaded and before it serves:
gunicorn's ``post_worker_init`` hook (``config/gunicorn.conf.py``), the ASGI application
factory ``config.asgi.serving_application`` (uvicorn's ``--factory``), ``manage.py serve``.
"""

from __future__ import annotations

import gc
import importlib

from django.conf import settings


def freeze_startup_objects() -> int:
    """Load the URLconf, collect, then freeze every tracked object; returns how many objects
    the collector now leaves out of its collections (``gc.get_freeze_count``)."""
    importlib.import_module(settings.ROOT_URLCONF)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
