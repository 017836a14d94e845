"""The API's JSON parser: DRF's, with a bound on nesting.

Python's ``json`` recurses once per nesting level: ten thousand nested arrays raise
``RecursionError`` (a 500), and a few hundred levels stored in a JSON field would recurse
again wherever they are validated or rendered. No request of this API nests deeper than a
handful of levels, so anything deeper than ``MAX_JSON_DEPTH`` is a 400.

Strings containing NUL (``\\u0000``) are refused too: PostgreSQL text cannot hold them, so one
that reached a query or a row (e.g. a ``client_order_id``) was a 500 there.
"""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 32


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from None
        if _depth_exceeds(data, MAX_JSON_DEPTH):
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
        if _has_nul(data):
            raise ParseError("JSON strings may not contain NUL characters.")
        return data


def _depth_exceeds(data, limit: int) -> bool:
    """True when containers nest more than ``limit`` levels (iterative: no recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _has_nul(data) -> bool:
    """True when any string, key or value, contains U+0000 (iterative)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False
