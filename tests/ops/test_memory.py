"""A serving process leaves what loading made out of the garbage collector's collections
(``runtime.memory``): gunicorn's workers through the configuration's ``post_worker_init`` hook,
uvicorn's through the ASGI factory its command names, ``manage.py serve`` itself."""

from __future__ import annotations

import gc
import runpy
import sys
from pathlib import Path

import pytest
from django.conf import settings

from runtime.websocket_server import uvicorn_command

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "config" / "gunicorn.conf.py"


@pytest.fixture
def unfrozen():
    """The test process's objects go back to the collector's generations afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_gunicorn_worker_loads_the_urlconf_and_freezes_what_it_loaded(unfrozen, monkeypatch):
    # given: the configuration gunicorn reads, in a worker whose URLconf is not loaded yet
    monkeypatch.delitem(sys.modules, settings.ROOT_URLCONF, raising=False)
    hooks = runpy.run_path(str(GUNICORN_CONF))

    # when: gunicorn calls its hook once the worker has loaded the application
    hooks["post_worker_init"](None)

    # then: the first request will not import the views, and collections skip what is loaded
    assert settings.ROOT_URLCONF in sys.modules
    assert "trades.api.views" in sys.modules
    assert gc.get_freeze_count() > 10_000


def test_uvicorns_workers_serve_the_application_through_the_freezing_factory(unfrozen):
    from config.asgi import application, serving_application

    # given: the command production starts the WebSocket server with
    command = uvicorn_command(["uvicorn"], host="127.0.0.1", port=8001)
    target = command[1]
    assert "--factory" in command
    module, _, name = target.partition(":")
    factory = getattr(sys.modules[module], name)

    # when: a uvicorn worker calls it
    served = factory()

    # then: it serves the application, with what loading made frozen
    assert factory is serving_application
    assert served is application
    assert gc.get_freeze_count() > 10_000


def test_objects_created_after_the_freeze_are_still_collected(unfrozen):
    from runtime.memory import freeze_startup_objects

    # given: everything alive frozen
    frozen = freeze_startup_objects()

    # when: a request leaves a reference cycle behind
    cycle = []
    cycle.append(cycle)
    del cycle

    # then: a collection frees it, and the frozen objects stay out of every collection
    assert gc.collect() >= 1
    assert gc.get_freeze_count() == frozen
