"""`ctxscope agent profile MODEL --tiny` works for every zoo model on the CPU: both phases profiled, with
roofline figures from its architecture's shape reader, in records that validate against the contract.

Runs `profile_run`, the command's body, with one profiled pass and one timed repetition per phase, so
that the whole zoo stays a matter of seconds per model; tests/agent/profiling/test_pipeline.py runs the
command line itself with more passes."""

from __future__ import annotations

import pytest

from ctxscope.agent.engine.loop import LoopPolicy
from ctxscope.agent.profiling.cli import profile_run
from ctxscope.agent.profiling.run import ProfileSettings
from ctxscope.agent.records import MemorySink
from ctxscope.agent.zoo import list_models
from ctxscope.shared.codec import decode, encode

MODELS = [spec.name for spec in list_models(include_unavailable=False)]
ONCE = LoopPolicy(warmups=0, min_reps=1, max_reps=1, min_time_s=0.0, max_time_s=1.0)


@pytest.mark.parametrize("model", MODELS)
def test_every_zoo_model_profiles_tiny_on_the_cpu(model: str) -> None:
    sink = MemorySink(device="test-dev")
    settings = ProfileSettings(lengths=(16,), phases=("prefill", "decode"), iterations=1, timed_policy=ONCE)
    profile_run(sink, model=model, precision="fp32", device="cpu", settings=settings, tiny=True)
    kinds = [r.kind for r in sink.records]
    assert kinds == ["run_started", *["run_progress"] * 3, "result", "run_finished"]  # loading, 2 phases
    assert all(decode(encode(r)) == r for r in sink.records)
    point = sink.records[4]
    assert point.outcome == "ok", point.error
    assert "failed_phases" not in point.details
    for phase in ("prefill", "decode"):
        assert point.details["operators"][phase]["classes"]
        roof = point.details["roofline"][phase]["over_latency"]
        assert roof["flops"] > 0 and roof["bytes"] > 0
