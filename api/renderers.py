"""The API's JSON renderer: DRF's ``JSONRenderer`` output, encoded by orjson.

Every API answer (documents, pages, problem+json errors) is rendered here. orjson encodes the
plain types (dict, list, str, int, float, bool, None, UUID) in C; everything else goes through
DRF's own ``JSONEncoder.default`` — datetimes, dates and times included (orjson's own format
is not DRF's: ``Z`` for UTC, microseconds as DRF writes them), so Decimals, lazy strings and
the rest come out as DRF renders them. The bytes are those of ``JSONRenderer`` with this
project's settings (``UNICODE_JSON``, ``COMPACT_JSON``): compact separators, non-ASCII
characters as UTF-8, U+2028 and U+2029 escaped.

Whatever orjson refuses (an integer beyond 64 bits, a non-string key, an object DRF's encoder
refuses too) and an indented rendering (``Accept: application/json; indent=4``) are rendered
by ``JSONRenderer`` itself, so they answer exactly as before. One difference remains: a float
NaN or infinity is ``null`` where DRF's strict encoder raised; no document of this API holds a
float that can be either (amounts are Decimals, written as strings).
"""

from __future__ import annotations

import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

# Datetimes, dates and times go to DRF's encoder rather than orjson's format.
OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_LINE_SEPARATOR = "\u2028".encode()
_PARAGRAPH_SEPARATOR = "\u2029".encode()


class OrjsonRenderer(JSONRenderer):
    """``JSONRenderer``'s bytes, encoded by orjson (see the module's docstring)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        indent = self.get_indent(accepted_media_type, renderer_context or {})
        if indent is not None or not self.compact or self.ensure_ascii:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            rendered = orjson.dumps(data, default=_DRF_ENCODER.default, option=OPTIONS)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)
        # JSONRenderer escapes them so that the JSON is also a JavaScript string literal.
        if _LINE_SEPARATOR in rendered:
            rendered = rendered.replace(_LINE_SEPARATOR, b"\\u2028")
        if _PARAGRAPH_SEPARATOR in rendered:
            rendered = rendered.replace(_PARAGRAPH_SEPARATOR, b"\\u2029")
        return rendered


_DRF_ENCODER = JSONEncoder()
