"""How production runs its WebSocket process: uvicorn on ``config.asgi`` (compose.yaml's ``ws``
service spells the same command; the benchmark and the process tests start it from here).

- ``config.asgi:serving_application --factory``: uvicorn calls the factory once in each worker
  process, which leaves the objects loading made out of the garbage collector's collections
  before the first connection (``runtime.memory``);
- ``--ws websockets-sansio``: the sans-I/O ``websockets`` protocol;
- ``--ws-per-message-deflate false``: each event is a small JSON frame sent to every watcher;
  compressing them costs more CPU than the bytes it saves;
- ``--lifespan off``: the application has no startup or shutdown hooks (``mcp_tools.http``
  starts what it needs on its first request);
- ``--workers`` (``WS_WORKERS`` in compose.yaml, default 2): one serving process per core. One
  process sends every frame and completes every handshake on one core; with the Redis channel
  layer each process subscribes to what its own connections watch. Always given, so that
  uvicorn does not take gunicorn's ``WEB_CONCURRENCY`` from the environment as its own.
"""

UVICORN_ARGS = [
    "config.asgi:serving_application",
    "--factory",
    "--ws",
    "websockets-sansio",
    "--ws-per-message-deflate",
    "false",
    "--lifespan",
    "off",
]


DEFAULT_WORKERS = 2


def uvicorn_command(
    executable: list[str], *, host: str, port: int | str, workers: int = DEFAULT_WORKERS
) -> list[str]:
    """The command line of the WebSocket server on ``host:port`` with ``workers`` processes;
    ``executable`` is how uvicorn is started (``["uvicorn"]``, ``[python, "-m", "uvicorn"]``)."""
    return [
        *executable,
        *UVICORN_ARGS,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
