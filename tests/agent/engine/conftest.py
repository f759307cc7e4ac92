"""Fixtures of the engine tests: tiny plans through the zoo's shrunk configs, on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

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


@pytest.fixture
def own_inductor_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test compiles into a cache of its own, so a graph another test compiled is not reused."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
