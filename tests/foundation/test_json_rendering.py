"""The API's JSON is DRF's ``JSONRenderer`` output byte for byte, whichever encoder wrote it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from api.renderers import OrjsonRenderer

DOCUMENTS = [
    {"amount": Decimal("1234.5600"), "price": "187.250000", "count": 3, "ratio": 85.25},
    {"at": datetime(2026, 12, 4, 5, 31, 28, 746647, tzinfo=UTC)},
    {"at": datetime(2026, 12, 4, 5, 31, 28, tzinfo=timezone(timedelta(hours=2)))},
    {"day": date(2026, 12, 4), "when": time(9, 30, 0, 5), "took": timedelta(seconds=1.5)},
    {"id": uuid.UUID("17cb2d1c-eea5-4fcc-bd6c-40aca6f72e41"), "none": None, "ok": True},
    {"text": 'caf\u00e9 \u2014 \U0001f4c8 line\u2028sep\u2029end "quoted" \\ \n\t\x01'},
    {"lazy": gettext_lazy("This field is required."), "nested": [[{"a": []}], {}]},
    {"big": 2**70, "keys": {1: "int key"}},
    [{"symbol": "AAPL", "quantity": "1.000000"}] * 3,
    "",
    [],
]


@pytest.mark.parametrize("data", DOCUMENTS)
def test_every_value_renders_as_drf_renders_it(data):
    assert OrjsonRenderer().render(data) == JSONRenderer().render(data)


def test_an_indented_rendering_is_drf_s_too():
    data = {"a": [1, {"b": Decimal("2.5")}]}
    indented = "application/json; indent=4"
    assert OrjsonRenderer().render(data, indented) == JSONRenderer().render(data, indented)


def test_nothing_renders_as_an_empty_body():
    assert OrjsonRenderer().render(None) == b""
