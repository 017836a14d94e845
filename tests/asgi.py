"""ASGI scopes for tests that drive an application directly, without a server."""

from __future__ import annotations

from collections.abc import Iterable


def http_scope(
    path: str, *, method: str = "GET", headers: Iterable[tuple[bytes, bytes]] = ()
) -> dict:
    """An HTTP/1.1 request scope for ``path`` on the test host, from a loopback client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
