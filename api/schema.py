"""OpenAPI schema post-processing: the problem documents every operation can answer.

drf-spectacular describes the success answers a view declares. The errors come from one place
(``api.exceptions``), so they are declared in one place too: this hook adds a ``Problem``
component and, to every operation, the error statuses its shape implies (401 when it needs
credentials, 404 when it has path parameters, 400/413/415 when it takes a body, 429 for the
``/api/`` rate limit). Domain errors particular to one operation (402, 409, 422, 503, …) are
declared on the view with ``extend_schema``; any error response declared without content gets
the problem document here.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An RFC 7807 problem document; extension members depend on the type.",
    "properties": {
        "type": {"type": "string", "description": "URL of the page describing the problem."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": True,
            "description": "Field errors of a validation-error.",
        },
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}

# A view's ``extend_schema(responses={409: PROBLEM, ...})``: the problem document of that
# status is filled in by ``add_problem_responses``.
PROBLEM = OpenApiResponse(description="RFC 7807 problem (application/problem+json)")

_DESCRIPTIONS = {
    "400": "Invalid input (validation-error).",
    "401": "No or invalid credentials (unauthorized).",
    "402": "Not enough available cash (insufficient-funds).",
    "403": "Not allowed (forbidden, self-approval).",
    "404": "No such resource, or someone else's (not-found).",
    "409": "Conflicts with the resource's state.",
    "413": "Body over 10 MB (payload-too-large).",
    "415": "Body is not JSON (unsupported-media-type).",
    "422": "Not enough position, or over the position limit.",
    "429": "Rate limit or quota exceeded; see Retry-After.",
    "503": "A gRPC dependency is unavailable; nothing changed. See Retry-After.",
}

_BODY_METHODS = frozenset({"post", "put", "patch"})


def add_problem_responses(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOK: declare the problem answers of every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in _implied_statuses(path, method, operation):
                responses.setdefault(status, {})
            for status, response in responses.items():
                if str(status)[:1] in {"4", "5"}:
                    response.setdefault("description", _DESCRIPTIONS.get(str(status), "Error."))
                    if not response.get("content"):
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}
    return result


def _implied_statuses(path: str, method: str, operation: dict) -> list[str]:
    statuses = []
    security = operation.get("security") or []
    if security and {} not in security:
        statuses.append("401")
    parameters = operation.get("parameters") or []
    if any(p.get("in") == "path" for p in parameters):
        statuses.append("404")
    if method in _BODY_METHODS:
        statuses += ["400", "413", "415"]
    elif any(p.get("in") == "query" for p in parameters):
        statuses.append("400")
    if any(p.get("in") == "query" and p.get("name") == "page" for p in parameters):
        statuses.append("404")  # DRF's pagination: a page past the end (or 0) is not found
    if path.startswith("/api/"):
        statuses.append("429")
    return statuses


# The service endpoints are plain Django views (they answer before DRF's machinery, and
# /metrics speaks Prometheus' text format), so drf-spectacular does not see them: they are
# declared here, with the documents observability.views answers.
_HEALTH_CHECKS = {
    "type": "object",
    "properties": {
        name: {"type": "string", "example": "ok"}
        for name in ("database", "metering", "oversight", "channel_layer")
    },
}
_SERVICE_PATHS = {
    "/health/live": {
        "get": {
            "operationId": "health_live",
            "summary": "Liveness: the process answers HTTP; checks nothing else.",
            "tags": ["service"],
            "security": [],
            "responses": {
                "200": {
                    "description": "Alive.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "string", "enum": ["ok"]},
                                    "timestamp": {"type": "string", "format": "date-time"},
                                },
                                "required": ["status", "timestamp"],
                            }
                        }
                    },
                }
            },
        }
    },
    "/health/ready": {
        "get": {
            "operationId": "health_ready",
            "summary": "Readiness: the database, both gRPC services and the channel layer.",
            "tags": ["service"],
            "security": [],
            "responses": {
                "200": {
                    "description": "Every dependency answers.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "string", "enum": ["ready"]},
                                    "checks": _HEALTH_CHECKS,
                                    "timestamp": {"type": "string", "format": "date-time"},
                                },
                            }
                        }
                    },
                },
                "503": {
                    "description": "A dependency is down; `failing` names it. See Retry-After.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "string", "enum": ["unavailable"]},
                                    "checks": _HEALTH_CHECKS,
                                    "failing": {"type": "array", "items": {"type": "string"}},
                                    "timestamp": {"type": "string", "format": "date-time"},
                                },
                            }
                        }
                    },
                },
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics of this process, in the text exposition format.",
            "tags": ["service"],
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}


def add_service_endpoints(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOK: the health and metrics endpoints."""
    result.setdefault("paths", {}).update(_SERVICE_PATHS)
    return result
