"""The profiling pass end to end on the CPU with tiny zoo models: CPU ops stand in for kernels and the
result says so; records validate against the wire contract; the trace stays local and is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ctxscope.agent.profiling.cli import profile
from ctxscope.agent.profiling.profile import profile_phase
from ctxscope.shared.codec import decode, encode
from ctxscope.shared.messages import MESSAGE_ADAPTER


@pytest.fixture(scope="module")
def tiny_qwen() -> torch.nn.Module:
    from ctxscope.agent import zoo

    loaded = zoo.load_model(zoo.tiny_spec("qwen2.5-0.5b"), device=torch.device("cpu"), dtype=torch.float32)
    return loaded.module.eval()


def test_a_cpu_pass_reports_cpu_ops_with_the_lm_head_apart(
    tiny_qwen: torch.nn.Module, tmp_path: Path
) -> None:
    ids = torch.randint(0, 500, (1, 64))

    def run() -> None:
        with torch.inference_mode():
            tiny_qwen(input_ids=ids, logits_to_keep=1)

    trace = tmp_path / "trace.json"
    result = profile_phase(
        run, phase="prefill", context_len=64, module=tiny_qwen, iterations=2, trace_path=trace
    )
    details = result.to_details()
    assert details["device_time_source"] == "cpu_ops"
    assert details["passes"] == 2 and len(result.per_pass) == 2
    assert sum(row["share_pct"] for row in details["classes"].values()) == pytest.approx(100.0)
    assert {"gemm", "lm_head", "attention", "norm"} <= set(details["classes"])
    assert all(len(row["time_ms_per_pass"]) == 2 for row in details["classes"].values())
    assert details["host"][0]["device_idle_ms"] is None
    assert details["trace_path"] == str(trace)
    assert any(
        e["name"].startswith("ctxscope::pass::prefill#") for e in json.loads(trace.read_text())["traceEvents"]
    )


def test_module_labels_are_removed_after_the_pass(tiny_qwen: torch.nn.Module) -> None:
    ids = torch.randint(0, 500, (1, 16))
    with torch.inference_mode():
        profile_phase(
            lambda: tiny_qwen(input_ids=ids), phase="prefill", context_len=16, module=tiny_qwen, iterations=1
        )
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in tiny_qwen.modules())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["qwen2.5-0.5b", "mamba2-130m"])
def test_the_profile_command_streams_valid_results(model: str, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    traces = tmp_path / "traces"
    args = [
        model,
        "--tiny",
        "--torch-device",
        "cpu",
        "--lengths",
        "32,64",
        "--phase",
        "prefill",
        "--phase",
        "decode",
    ]
    args += ["--iterations", "2", "--out", str(out), "--trace-dir", str(traces)]
    result = CliRunner().invoke(profile, args)
    assert result.exit_code == 0, result.output
    assert "share %" in result.output and "time ms" in result.output
    assert "2/2" in result.stderr  # the progress bar: results in of the total
    records = [MESSAGE_ADAPTER.validate_json(line) for line in out.read_text().splitlines()]
    assert all(decode(encode(r)) == r for r in records)  # what goes over MQTT carries it all
    steps = [r.point for r in records if r.kind == "run_progress"]
    assert steps == [
        f"{model}/bf16: loading",
        *(f"{model}/bf16: {phase} @ {n} tokens" for n in (32, 64) for phase in ("prefill", "decode")),
    ]
    records = [r for r in records if r.kind != "run_progress"]
    assert [r.kind for r in records] == ["run_started", "result", "result", "run_finished"]
    started, finished = records[0], records[-1]
    assert started.total_points == 2 and started.plan["tiny"] and started.plan["models"] == [model]
    assert (finished.outcome, finished.points_ok, finished.points_failed) == ("completed", 2, 0)
    for r in records[1:3]:
        assert r.run_id == started.run_id and r.model == model  # named as asked; the plan says tiny
        assert r.point_id == f"{model}/bf16/{r.context_len}/profile" and r.details["kind"] == "profile"
        assert r.outcome == "ok"
        assert r.manifest == records[0].manifest and r.manifest["precision"] == "bf16"
        assert set(r.details["operators"]) == {"prefill", "decode"}
        for phase in ("prefill", "decode"):
            operators = r.details["operators"][phase]
            assert operators["device_time_source"] == "cpu_ops"
            assert sum(c["share_pct"] for c in operators["classes"].values()) == pytest.approx(100.0)
            assert Path(operators["trace_path"]).parent == traces
            roof = r.details["roofline"][phase]["over_latency"]
            assert roof["flops"] > 0 and roof["achieved_tflops"] > 0
            assert r.metrics[f"profile_{phase}_latency"].unit == "ms"
    assert len(list(traces.glob("*.json"))) == 4


def test_an_unknown_model_is_a_usage_error() -> None:
    result = CliRunner().invoke(profile, ["no-such-model", "--torch-device", "cpu"])
    assert result.exit_code != 0
    assert "no-such-model" in result.output


def test_a_failing_point_is_a_result_and_the_sweep_goes_on() -> None:
    """GPT-Neo's learned positions end at 2048: a longer prompt faults for real (IndexError on the
    CPU); the lengths around it still run, with their roofline figures."""
    from ctxscope.agent.engine.point import ModelChoice, Session
    from ctxscope.agent.profiling.run import ProfileSettings, profile_session

    session = Session(ModelChoice(name="gpt-neo-125m", precision="fp32", device="cpu", tiny=True))
    settings = ProfileSettings(lengths=(16, 2100, 32), phases=("prefill",), iterations=1, timed_policy=None)
    points = list(profile_session(session, settings, None))
    assert [(p.context_len, p.outcome) for p in points] == [(16, "ok"), (2100, "fault"), (32, "ok")]
    assert "IndexError" in (points[1].error or "")
    assert points[1].details()["failed_phases"]["prefill"].startswith("fault: IndexError")
    roofline = points[0].details()["roofline"]["prefill"]
    assert "over_latency" not in roofline and "over_device_busy" not in roofline  # untimed, on a CPU
    assert roofline["implementation"].startswith("transformers forward")
    assert points[0].details()["operators"]["prefill"]["device_time_source"] == "cpu_ops"


def test_an_unexpected_error_still_ends_the_profile_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctxscope.agent.profiling import run as profiling_run
    from ctxscope.agent.profiling.cli import profile_run
    from ctxscope.agent.profiling.run import ProfileSettings
    from ctxscope.agent.records import MemorySink

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("trace disk full")

    monkeypatch.setattr(profiling_run, "profile_session", broken)
    sink = MemorySink(device="test-dev")
    settings = ProfileSettings(lengths=(16,), phases=("prefill",), iterations=1, timed_policy=None)
    with pytest.raises(RuntimeError):
        profile_run(sink, model="qwen2.5-0.5b", precision="fp32", device="cpu", settings=settings, tiny=True)
    finished = sink.records[-1]
    assert finished.kind == "run_finished" and finished.outcome == "failed"
    assert finished.error == "RuntimeError: trace disk full"


def test_a_profiles_timed_latency_says_what_one_sample_is() -> None:
    """Every method string says what one sample is: one prefill of its tokens, or one greedy step."""
    from ctxscope.agent.engine.loop import LoopPolicy
    from ctxscope.agent.engine.point import ModelChoice, Session
    from ctxscope.agent.profiling.run import ProfileSettings, profile_session, profiled_length

    session = Session(ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True))
    policy = LoopPolicy(warmups=0, min_reps=2, max_reps=2, min_time_s=0.0)
    settings = ProfileSettings(lengths=(16,), phases=("prefill", "decode"), iterations=1, timed_policy=policy)
    (point,) = profile_session(session, settings, peaks=None)
    metrics = profiled_length(session, point).metrics
    assert "one prefill of 16 random tokens, batch 1" in metrics["profile_prefill_latency"].method
    assert "one greedy step at context 16, batch 1" in metrics["profile_decode_latency"].method
