"""Counts ``api_calls`` usage for every authenticated API request made for an agent."""

from __future__ import annotations

import logging

from api.routes import route_agent_id
from metering.services import api_call_record

logger = logging.getLogger("trading_demo.metering")

# Answers given before the agent was known to be the caller's (see the class docstring).
_NOT_CHARGED = frozenset({401, 403, 404, 405})


class ApiCallMeteringMiddleware:
    """After the response, records one ``api_calls`` event if the request was for an agent.

    DRF authenticates tokens inside the view and then sets ``request.user`` on the Django
    request, so the user is read after the response. The answer tells whether the agent was
    the user's to use: every agent route answers 404 for an agent that does not exist or is not
    visible, 401/403 for a caller who may not act, 405 before looking the agent up. A request
    the server failed to serve (5xx: a dependency down, a bug) is not charged either: it changed
    nothing, and a failed order must leave nothing behind. Metering never breaks a response: a
    failure to record is logged.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        charged = (
            response.status_code < 500
            and response.status_code not in _NOT_CHARGED
            # An accepted order records its api_calls event with the order's own usage.
            and not getattr(response, "api_call_recorded", False)
        )
        agent_id = route_agent_id(request) if charged else None
        if agent_id is not None:
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                try:
                    api_call_record(agent_id=agent_id, request=request)
                except Exception:
                    logger.exception("could not record api_calls usage for agent %s", agent_id)
        return response
