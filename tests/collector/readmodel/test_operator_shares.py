"""Operator shares from a result's free-form `details`: a device's odd shape is left out, never an
error for its page or the fleet's report."""

from __future__ import annotations

from ctxscope.collector.readmodel.views import operator_shares
from tests.support import point_result


def test_classes_of_another_shape_are_left_out() -> None:
    result = point_result("orin-1", "0123456789abcdef", 1)
    result.details["operators"] = {
        "prefill": {
            "classes": {
                "gemm": {"share_pct": 61.5},
                "scan": 1,  # not a mapping
                "norm": {"share_pct": "12"},  # not a number
                "copy": {"share_pct": True},  # not a number either
                "attention": {"share_pct": 20},
            }
        },
        "decode": {"classes": ["gemm"]},  # not a mapping of classes: the phase is skipped
    }
    (row,) = operator_shares([result])
    assert row["phase"] == "prefill" and row["share_pct"] == {"gemm": 61.5, "attention": 20}
