"""The fleet-sized JSON response: valid JSON for any value FastAPI's own encoding accepts here."""

from __future__ import annotations

import json

from ctxscope.collector.readmodel.responses import FastJSONResponse


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_nan_and_infinities_become_null_and_tuples_lists() -> None:
    body = FastJSONResponse({"a": float("nan"), "b": [1.5, float("inf"), float("-inf")], "c": (1, "x")}).body
    parsed = json.loads(body, parse_constant=_refuse)  # strict JSON: no NaN or Infinity constants
    assert parsed == {"a": None, "b": [1.5, None, None], "c": [1, "x"]}


def test_the_media_type_is_json() -> None:
    response = FastJSONResponse({"devices": []})
    assert response.media_type == "application/json"
    assert response.headers["content-type"] == "application/json"
