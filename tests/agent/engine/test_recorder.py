"""The run framing every command shares: start with plan, hash and manifest; progress; counted results;
a finish that says how the run ended."""

from __future__ import annotations

from typing import Any

import pytest

from ctxscope.agent.engine.recorder import RunRecorder, plan_hash
from ctxscope.agent.records import MemorySink

PLAN = {"name": "unit", "models": ["qwen2.5-0.5b"], "tiny": True}


def _result(run: RunRecorder, outcome: str, length: int = 16) -> Any:
    return run.result(
        point_id=f"qwen2.5-0.5b/fp32/{length}",
        model="qwen2.5-0.5b",
        family="transformer",
        context_len=length,
        precision="fp32",
        outcome=outcome,
    )


def test_a_run_is_framed_and_counted() -> None:
    sink = MemorySink(device="test-dev")
    with RunRecorder(sink, plan=PLAN, total=3, torch_device="cpu", manifest_extra={"peaks": "x"}) as run:
        run.progress("first")
        _result(run, "ok")
        run.progress("second")
        _result(run, "oom", 32)
        _result(run, "skipped", 64)
    kinds = [r.kind for r in sink.records]
    assert kinds == [
        "run_started",
        "run_progress",
        "result",
        "run_progress",
        "result",
        "result",
        "run_finished",
    ]
    started, finished = sink.records[0], sink.records[-1]
    assert started.run_id.startswith("run-") and started.plan == PLAN and started.total_points == 3
    assert started.plan_hash == plan_hash(PLAN) == started.manifest["plan_hash"]
    assert started.manifest["peaks"] == "x" and started.manifest["device"] == "cpu"
    assert [r.done for r in sink.of_kind("run_progress")] == [0, 1]
    for result in sink.of_kind("result"):
        assert result.run_id == started.run_id
        assert result.manifest == {**started.manifest, "precision": "fp32"}
    # skipped (not measurable here) is neither a success nor a failure
    assert (finished.outcome, finished.points_ok, finished.points_failed) == ("completed", 1, 1)
    assert run.done == 3 and len(run.results) == 3


def test_an_error_ends_the_run_as_failed_and_propagates() -> None:
    sink = MemorySink()
    with pytest.raises(RuntimeError), RunRecorder(sink, plan=PLAN, total=2, torch_device="cpu") as run:
        _result(run, "ok")
        raise RuntimeError("disk on fire")
    finished = sink.records[-1]
    assert finished.kind == "run_finished" and finished.outcome == "failed"
    assert finished.error == "RuntimeError: disk on fire" and finished.points_ok == 1


def test_a_cancelled_run_says_so() -> None:
    sink = MemorySink()
    with RunRecorder(sink, plan=PLAN, total=2, torch_device="cpu", run_id="run-given") as run:
        run.cancel()
    assert run.cancelled
    assert [(r.kind, r.run_id) for r in sink.records] == [
        ("run_started", "run-given"),
        ("run_finished", "run-given"),
    ]
    assert sink.records[-1].outcome == "cancelled"


def test_a_plan_hashes_as_the_recorder_hashes_it(make_plan: Any) -> None:
    plan = make_plan()
    assert plan.hash == plan_hash(plan.model_dump(mode="json"))
    assert plan_hash({"a": 1, "b": [2]}) == plan_hash({"b": [2], "a": 1})
