"""What a resolved API route tells about a request."""

from __future__ import annotations


def route_agent_id(request) -> str | None:
    """The agent a resolved request is made for: the ``agent_id`` of its route (every agent
    route names it so), or None before resolving and on other routes."""
    match = getattr(request, "resolver_match", None)
    agent_id = match.kwargs.get("agent_id") if match is not None else None
    return str(agent_id) if agent_id else None
