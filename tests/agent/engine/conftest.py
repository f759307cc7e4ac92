"""Fixtures of the engine tests: tiny plans through the zoo's shrunk configs, on the CPU."""

from __future__ import annotations

from typing import Any

import pytest

from ctxscope.agent.engine.plan import Plan, validate


def tiny_plan(**overrides: Any) -> Plan:
    raw: dict[str, Any] = {
        "name": "test",
        "models": ["qwen2.5-0.5b"],
        "context_lengths": [32],
        "precisions": ["fp32"],
        "tiny": True,
        "warmups": 1,
        "min_reps": 2,
        "max_reps": 4,
        "min_time_s": 0.0,
        "max_time_s": 5.0,
        "decode_tokens": 3,
        "isolate": "never",
        **overrides,
    }
    return validate(raw)


@pytest.fixture
def make_plan():
    return tiny_plan
