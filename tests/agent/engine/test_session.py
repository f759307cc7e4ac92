"""A loaded session's analytic figures follow the runtime that was actually loaded."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from ctxscope.agent import zoo
from ctxscope.agent.engine.point import ModelChoice, Session


def test_state_bytes_follow_the_loaded_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """mamba_ssm keeps SSM states in the model dtype, transformers in float32: the analytic state
    figure must be the loaded runtime's (here a native load, emulated on the CPU)."""
    real = zoo.load_model

    def as_native(spec: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real(spec, **kwargs), runtime="mamba_ssm")

    monkeypatch.setattr(zoo, "load_model", as_native)
    session = Session(ModelChoice(name="mamba2-780m", precision="bf16", device="cpu", tiny=True))
    native = zoo.state_bytes(session.spec, torch.bfloat16, runtime="mamba_ssm")
    assert native != zoo.state_bytes(session.spec, torch.bfloat16, runtime="transformers")
    assert session.state_bytes == native


def test_out_of_memory_in_the_decode_loop_keeps_the_prefill_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dynamic cache allocates while stepping: an OOM inside the decode loop (not only in its setup)
    is the decode's outcome, and the point keeps its measured prefill."""
    from ctxscope.agent.engine import point

    real = point.measure

    def measure(run_once: Any, **kwargs: Any) -> Any:
        if kwargs["name"] == "decode":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (emulated in the decode loop)")
        return real(run_once, **kwargs)

    monkeypatch.setattr(point, "measure", measure)
    session = Session(ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True))
    policy = point.LoopPolicy(warmups=0, min_reps=2, max_reps=2, min_time_s=0.0)
    outcome = point.measure_point(
        session, point.PointSettings(context_len=16, decode_tokens=2, policy=policy)
    )
    assert outcome.outcome == "ok" and "ttft" in outcome.metrics
    assert outcome.details["decode_outcome"] == "oom"
    assert "emulated in the decode loop" in outcome.details["decode_error"]
    assert "decode_per_token" not in outcome.metrics
    assert [loop.phase for loop in outcome.loops] == ["prefill"]
