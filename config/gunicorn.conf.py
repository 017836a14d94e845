"""gunicorn settings of the HTTP server: ``gunicorn -c config/gunicorn.conf.py config.wsgi``.

Threaded workers (``gthread``): a request waiting on the database or a gRPC service leaves its
process free for the others. Every worker imports the application itself after the fork
(no ``preload_app``): gRPC channels must not cross a fork. Settings come from the environment:

- ``HOST``/``PORT``: the listening address (default ``0.0.0.0:8000``);
- ``WEB_CONCURRENCY``: worker processes (default 2, gunicorn's own variable);
- ``WEB_THREADS``: threads per worker (default 4);
- ``WEB_TIMEOUT``: seconds a request may run before its worker is replaced (default 30);
- ``GRPC_MAX_CALLS_IN_FLIGHT``: gRPC calls a worker may wait on at once (default: one less than
  its threads, at least 1). A call beyond it waits up to ``GRPC_CALL_SLOT_WAIT_SECONDS`` for
  a slot, then answers 503: a slow metering or oversight service then holds at most that many
  threads, and the one left keeps ``/health/live`` and the reads answering while orders wait
  on the service, up to their deadline.

Once a worker has loaded the application (``post_worker_init``), it loads the URLconf and
leaves everything loaded out of the garbage collector's collections (``runtime.memory``).

On SIGTERM gunicorn stops accepting, lets the requests in flight finish for
``graceful_timeout`` seconds and exits 0. The access log is Django's (``trading_demo.access``),
so gunicorn's own is off. gunicorn's error log (workers started and stopped, a request that
failed outside Django, a worker that crashed or timed out) goes through the filters of the
application's own console log: outside ``LOG_TRACEBACKS`` (``DEBUG`` by default) a failure is
one line naming its exception, without its traceback, and secrets are masked.
"""

import copy
import os

from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
# Read by the settings in every worker (forked from this process, so they inherit it).
os.environ.setdefault("GRPC_MAX_CALLS_IN_FLIGHT", str(max(threads - 1, 1)))
graceful_timeout = 10
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# No runtime control socket: one fixed path per user would be shared by every gunicorn on the
# machine (tests, the benchmark); manage the server with signals.
control_socket_disable = True

# Merged into gunicorn's own logging defaults (its "generic" format): the error log's handler
# with the filters of the application's console handler, as config.settings.LOGGING defines
# them (a copy: the configuration of the workers' Django logging stays as it is).
logconfig_dict = {
    "filters": copy.deepcopy(
        {name: settings.LOGGING["filters"][name] for name in ("tracebacks", "redact_secrets")}
    ),
    "root": {"level": "WARNING", "handlers": []},
    "loggers": {
        "gunicorn.error": {
            "level": loglevel.upper(),
            "handlers": ["error_console"],
            "propagate": False,
        },
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
    "handlers": {
        "error_console": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stderr",
            "filters": ["tracebacks", "redact_secrets"],
        },
    },
}


def post_worker_init(worker):
    """After the worker has loaded the application: leave the objects loading made out of the
    garbage collector's collections (``runtime.memory``)."""
    from runtime.memory import freeze_startup_objects

    freeze_startup_objects()
