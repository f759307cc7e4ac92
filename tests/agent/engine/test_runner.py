"""The runner end to end on tiny models: record sequence, manifest, metrics, failures."""

from __future__ import annotations

import sys

import pytest

from ctxscope.agent import zoo
from ctxscope.agent.engine.runner import run_plan
from ctxscope.agent.phases import DeviceBusy, PhaseReport, PhaseWindow
from ctxscope.agent.records import MemorySink
from ctxscope.shared.codec import decode, encode
from ctxscope.shared.messages import Metric, PointResult


def test_record_sequence_manifest_and_metrics(make_plan) -> None:
    plan = make_plan(models=["qwen2.5-0.5b", "mamba2-780m"], context_lengths=[16, 32])
    sink = MemorySink(device="test-dev")
    summary = run_plan(plan, sink, progress=False, device="cpu")

    kinds = [r.kind for r in sink.records]
    assert kinds == ["run_started"] + ["run_progress", "result"] * 4 + ["run_finished"]
    assert [r.seq for r in sink.records] == list(range(1, len(kinds) + 1))
    started = sink.records[0]
    assert started.plan_hash == plan.hash and started.total_points == 4
    assert started.manifest["plan_hash"] == plan.hash
    assert {"torch", "transformers"} <= set(started.manifest["packages"])
    assert summary.points_ok == 4 and summary.points_failed == 0
    assert sink.records[-1].points_ok == 4

    for result in summary.results:
        assert result.outcome == "ok"
        assert result.manifest["precision"] == "fp32"
        assert result.metrics["ttft"].unit == "ms" and result.metrics["ttft"].n >= 2
        assert result.metrics["decode_per_token"].n >= 2
        # the CPU has no allocator statistics: peak and activations are absent, not zero
        assert "memory_peak" not in result.metrics and "memory_activations" not in result.metrics
        assert result.metrics["memory_cache_analytic"].samples[0] > 0
        assert (
            result.metrics["memory_logits"].samples[0] == result.metrics["memory_logits_analytic"].samples[0]
        )
        assert result.implementation["runtime"] == "transformers"
        assert result.details["ttft_loop"]["windows"]
        assert decode(encode(result)) == result  # survives the wire

    by_model = {r.model: r for r in summary.results}
    assert by_model["qwen2.5-0.5b"].implementation["decode_path"] == "eager_static_cache"
    assert by_model["mamba2-780m"].implementation["decode_path"] == "eager_dynamic_cache"
    assert by_model["mamba2-780m"].family == "ssm"
    # the fallback from native mamba_ssm is stated with its reason, not only by the runtime's name
    assert any("native mamba_ssm not used" in n for n in by_model["mamba2-780m"].details["load_notes"])
    assert "load_notes" not in by_model["qwen2.5-0.5b"].details
    qwen = [r for r in summary.results if r.model == "qwen2.5-0.5b"]
    # the KV cache grows with the context: measured cache bytes follow the analytic ones
    assert qwen[1].metrics["memory_cache"].samples[0] > qwen[0].metrics["memory_cache"].samples[0]


def test_logits_all_keeps_every_position(make_plan) -> None:
    summary = run_plan(make_plan(logits="all", decode_tokens=0), MemorySink(), progress=False, device="cpu")
    (result,) = summary.results
    assert result.logits == "all"
    logits = result.metrics["memory_logits"].samples[0]
    assert logits == result.metrics["memory_logits_analytic"].samples[0]
    assert logits >= 32 * 4 * 100  # 32 positions x vocab x fp32
    assert "decode_per_token" not in result.metrics


class CountingObserver:
    """A stand-in telemetry observer that reports the windows it was given."""

    min_window_ns = 5_000_000

    def __init__(self) -> None:
        self.seen: list[list[PhaseWindow]] = []

    def summarize(self, windows):
        self.seen.append(list(windows))
        span = sum(w.end_ns - w.start_ns for w in windows) / 1e9
        return PhaseReport(metrics={"window_s": Metric(unit="s", method="sum of windows", samples=[span])})


def test_observer_gets_long_enough_windows(make_plan) -> None:
    observer = CountingObserver()
    summary = run_plan(make_plan(), MemorySink(), observer=observer, progress=False, device="cpu")
    (windows,) = observer.seen
    assert {w.name for w in windows} == {"prefill", "decode"}
    assert all(w.end_ns - w.start_ns >= observer.min_window_ns for w in windows)
    assert "window_s" in summary.results[0].metrics


@pytest.mark.slow
def test_child_killed_mid_point_is_a_fault_and_the_sweep_goes_on(
    make_plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTXSCOPE_ENGINE_KILL_AT", "24")
    plan = make_plan(context_lengths=[16, 24, 32], isolate="always", point_timeout_s=120)
    sink = MemorySink()
    summary = run_plan(plan, sink, progress=False, device="cpu")
    outcomes = {r.context_len: r for r in summary.results}
    assert outcomes[16].outcome == "ok"
    assert outcomes[24].outcome == "fault"
    assert "SIGKILL" in (outcomes[24].error or "")
    assert outcomes[32].outcome == "ok"  # a new worker took over
    assert "load_s" in outcomes[32].details["child_process"]
    assert summary.points_failed == 1 and summary.points_ok == 2
    assert sink.records[-1].kind == "run_finished"
    assert isinstance(summary.results[0], PointResult)


@pytest.mark.slow
def test_a_fault_past_the_ssd_index_limit_is_explained(make_plan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        zoo, "ssd_int32_limit_tokens", lambda spec: 20 if spec.model_type == "mamba2" else None
    )
    monkeypatch.setenv("CTXSCOPE_ENGINE_KILL_AT", "24")
    plan = make_plan(
        models=["mamba2-780m"],
        context_lengths=[16, 24],
        isolate="always",
        decode_tokens=0,
        point_timeout_s=120,
    )
    summary = run_plan(plan, MemorySink(), progress=False, device="cpu")
    outcomes = {r.context_len: r for r in summary.results}
    assert outcomes[16].outcome == "ok" and "limit_note" not in outcomes[16].details
    assert outcomes[24].outcome == "fault"
    assert "past 20 tokens" in outcomes[24].details["limit_note"]


@pytest.mark.slow
def test_max_context_search_is_a_record(make_plan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXSCOPE_ENGINE_BYTE_BUDGET", str(10**12))  # never reached: the search is bounded
    plan = make_plan(
        decode_tokens=0,
        max_context={"enabled": True, "start": 64, "max_tokens": 128, "probe_timeout_s": 120},
    )
    sink = MemorySink()
    summary = run_plan(plan, sink, progress=False, device="cpu")
    record = sink.records[-2]
    assert record.kind == "result" and record.point_id == "qwen2.5-0.5b/fp32/max-context"
    assert record.details["kind"] == "max_context"
    assert record.metrics["max_context"].samples == [128.0] and record.metrics["max_context"].unit == "tokens"
    assert record.details["search"]["summary"] == ">= 128 tokens, bounded by max_tokens=128"
    assert record.metrics["max_context"].method.endswith("lower bound, max_tokens=128")
    assert [p["outcome"] for p in record.details["search"]["probes"]] == ["ok", "ok"]
    assert summary.max_context["qwen2.5-0.5b/fp32/max-context"].largest_ok == 128
    # the search is one step of the run like a point: announced, and counted in the total and the end
    assert sink.records[-3].kind == "run_progress" and sink.records[-3].point == record.point_id
    assert sink.records[0].total_points == 2 and sink.records[-1].points_ok == 2


def test_a_malformed_worker_reply_is_a_fault_and_the_run_goes_on(
    make_plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that answers what the protocol does not allow fails its point with the reason; the run
    records it and ends normally."""
    from ctxscope.agent.engine.isolation import Worker
    from ctxscope.agent.engine.protocol import REPLY_MARK

    script = (
        f'import sys\nfor _ in sys.stdin:\n    print({REPLY_MARK!r} + \'{{"outcome": "ok"}}\', flush=True)'
    )
    monkeypatch.setattr(Worker, "argv", [sys.executable, "-c", script])
    plan = make_plan(context_lengths=[16, 32], isolate="always", decode_tokens=0, spread_processes=1)
    sink = MemorySink()
    summary = run_plan(plan, sink, progress=False, device="cpu")
    assert [r.outcome for r in summary.results] == ["fault", "fault"]
    for result in summary.results:
        error = result.error or ""
        assert error.startswith(
            "load of model qwen2.5-0.5b (fp32, tiny) on cpu: malformed reply from the worker"
        )
        assert "load_s: Field required" in error
    assert sink.records[-1].outcome == "completed" and sink.records[-1].points_failed == 2


@pytest.mark.parametrize("isolate", ["never", "always"])
def test_a_plan_asks_for_operator_profiles(make_plan, isolate: str) -> None:
    """Profiles come after each model's points, under the run's id, with operator shares: in this
    process, or in the worker that measured the points."""
    plan = make_plan(
        models=["qwen2.5-0.5b", "mamba2-780m"],
        context_lengths=[32],
        decode_tokens=0,
        isolate=isolate,
        spread_processes=1,
        profile={"phases": ["prefill", "decode"], "context_lengths": [32, 64]},
    )
    sink = MemorySink()
    summary = run_plan(plan, sink, progress=False, device="cpu")
    started = sink.records[0]
    assert started.total_points == 2 + 4  # the points and the profiled lengths
    progress = [r.point for r in sink.of_kind("run_progress")]
    assert progress == ["qwen2.5-0.5b/fp32/32", "qwen2.5-0.5b/fp32/profile", "mamba2-780m/fp32/32",
                        "mamba2-780m/fp32/profile"]  # fmt: skip
    profiles = [r for r in sink.of_kind("result") if r.point_id.endswith("/profile")]
    assert [(r.model, r.context_len) for r in profiles] == [
        ("qwen2.5-0.5b", 32), ("qwen2.5-0.5b", 64), ("mamba2-780m", 32), ("mamba2-780m", 64)
    ]  # fmt: skip
    for record in profiles:
        assert record.run_id == started.run_id and record.outcome == "ok", record.error
        assert set(record.details["operators"]) == {"prefill", "decode"}
        shares = record.details["operators"]["prefill"]["classes"]
        assert 99.0 <= sum(c["share_pct"] for c in shares.values()) <= 101.0
        assert record.metrics["profile_prefill_device_time"].unit == "ms"
        assert record.manifest["plan_hash"] == plan.hash
    assert summary.points_ok == 2 + 4 and sink.records[-1].points_ok == 6


def test_a_profile_that_fails_is_a_failed_result_per_length(
    make_plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctxscope.agent.profiling import run as profiling

    def broken(*_args: object) -> list[dict[str, object]]:
        raise RuntimeError("the profiler broke")

    monkeypatch.setattr(profiling, "plan_profile", broken)
    plan = make_plan(decode_tokens=0, profile={"phases": ["prefill"], "context_lengths": [32, 64]})
    sink = MemorySink()
    summary = run_plan(plan, sink, progress=False, device="cpu")
    failed = [r for r in sink.of_kind("result") if r.point_id.endswith("/profile")]
    assert [(r.context_len, r.outcome) for r in failed] == [(32, "fault"), (64, "fault")]
    assert all("the profiler broke" in (r.error or "") for r in failed)
    assert summary.points_ok == 1 and summary.points_failed == 2
    assert sink.records[-1].outcome == "completed"


def test_a_plan_without_profile_phases_profiles_nothing(make_plan) -> None:
    """`phases = []` switches the profiles off (lengths without phases at all are refused: test_plan)."""
    plan = make_plan(profile={"phases": [], "context_lengths": [32]})
    assert plan.profile_lengths == []
    sink = MemorySink()
    run_plan(plan, sink, progress=False, device="cpu")
    assert not [r for r in sink.of_kind("result") if r.point_id.endswith("/profile")]


def test_required_fast_kernels_turn_a_fallback_into_a_recorded_failure(make_plan) -> None:
    plan = make_plan(models=["mamba2-780m", "qwen2.5-0.5b"], require_fast_kernels=True, decode_tokens=0)
    summary = run_plan(plan, MemorySink(), progress=False, device="cpu")
    by_model = {r.model: r for r in summary.results}
    assert by_model["mamba2-780m"].outcome == "fault"
    assert "KernelPathError" in (by_model["mamba2-780m"].error or "")
    assert by_model["qwen2.5-0.5b"].outcome == "ok"  # the sweep went on


def test_should_stop_cancels_after_the_point_in_hand(make_plan) -> None:
    plan = make_plan(models=["qwen2.5-0.5b", "mamba2-780m"], context_lengths=[16, 32], decode_tokens=0)
    sink = MemorySink(device="test-dev")
    summary = run_plan(
        plan, sink, progress=False, device="cpu", should_stop=lambda: len(sink.of_kind("result")) >= 1
    )
    assert [r.kind for r in sink.records] == ["run_started", "run_progress", "result", "run_finished"]
    finished = sink.records[-1]
    assert finished.outcome == "cancelled" and finished.points_ok == 1
    assert summary.points_ok == 1


def test_an_unexpected_error_still_ends_the_run(make_plan, monkeypatch) -> None:
    from ctxscope.agent.engine import runner

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner, "_measure_and_emit", broken)
    sink = MemorySink(device="test-dev")
    with pytest.raises(RuntimeError):
        run_plan(make_plan(decode_tokens=0), sink, progress=False, device="cpu")
    finished = sink.records[-1]
    assert finished.kind == "run_finished" and finished.outcome == "failed"
    assert finished.error == "RuntimeError: disk on fire"


def test_a_compiled_steps_one_row_path_and_its_count_are_recorded_apart(make_plan, monkeypatch) -> None:
    """The path goes in the series key (the same in every process); the count, which a compile
    from inductor's cache cannot give, goes in the details. The CPU compiles no step: neither."""
    from ctxscope.agent.engine import forward, onerow

    plain = run_plan(make_plan(), MemorySink(), progress=False, device="cpu").results[0]
    assert "decode_one_row_products" not in plain.implementation
    assert "decode_one_row_note" not in plain.details

    make_decoder = forward.make_decoder

    def compiled_as_on_a_gpu(*args, **kwargs):
        decoder = make_decoder(*args, **kwargs)
        decoder.one_row_path = onerow.LABEL
        decoder.one_row_products = "168 one-row matrix products compiled as reductions"
        return decoder

    monkeypatch.setattr(forward, "make_decoder", compiled_as_on_a_gpu)
    result = run_plan(make_plan(), MemorySink(), progress=False, device="cpu").results[0]
    assert result.implementation["decode_one_row_products"] == onerow.LABEL
    assert result.details["decode_one_row_note"] == "168 one-row matrix products compiled as reductions"
    assert decode(encode(result)) == result


@pytest.mark.parametrize(
    ("one_row", "combo", "pdl"),
    [(True, True, True), (False, True, True), (True, False, True), (True, True, False)],
)
def test_the_plans_compile_switches_reach_the_decoder_and_the_record(
    make_plan, monkeypatch, one_row: bool, combo: bool, pdl: bool
) -> None:
    """one_row_reductions, combo_kernels and dependent_launch reach the decoder; a step compiled
    without one says so in the series key, and one without the one-row pass gives no count. The CPU
    compiles no step, so a plain CPU record has none of these keys."""
    from ctxscope.agent.engine import forward, graphed, onerow

    plain = run_plan(make_plan(), MemorySink(), progress=False, device="cpu").results[0]
    assert "decode_combo_kernels" not in plain.implementation
    assert "decode_dependent_launch" not in plain.implementation
    asked: list[tuple[bool, bool, bool]] = []
    make_decoder = forward.make_decoder

    def compiled_as_on_a_gpu(*args, options: graphed.StepCompile = graphed.ENGINE_COMPILE):
        one_row, combo, pdl = options.one_row, options.combo, options.pdl
        asked.append((one_row, combo, pdl))
        decoder = make_decoder(*args, options)
        decoder.one_row_path = onerow.LABEL if one_row else onerow.OFF_LABEL
        decoder.one_row_products = "168 one-row matrix products compiled as reductions" if one_row else None
        decoder.combo_path = graphed.COMBO_LABEL if combo else graphed.COMBO_OFF_LABEL
        decoder.pdl_path = graphed.PDL_LABEL if pdl else graphed.PDL_OFF_LABEL
        return decoder

    monkeypatch.setattr(forward, "make_decoder", compiled_as_on_a_gpu)
    plan = make_plan(one_row_reductions=one_row, combo_kernels=combo, dependent_launch=pdl)
    result = run_plan(plan, MemorySink(), progress=False, device="cpu").results[0]
    assert asked == [(one_row, combo, pdl)]
    assert result.implementation["decode_one_row_products"] == (onerow.LABEL if one_row else onerow.OFF_LABEL)
    assert ("decode_one_row_note" in result.details) == one_row
    assert result.implementation["decode_combo_kernels"] == (
        graphed.COMBO_LABEL if combo else graphed.COMBO_OFF_LABEL
    )
    assert result.implementation["decode_dependent_launch"] == (
        graphed.PDL_LABEL if pdl else graphed.PDL_OFF_LABEL
    )


@pytest.mark.parametrize(("decode", "in_graph"), [("auto", True), ("graph", True), ("eager", False)])
def test_attention_trials_time_decode_as_the_plan_runs_it(
    make_plan, monkeypatch, decode: str, in_graph: bool
) -> None:
    """Decode from a CUDA graph (auto, graph) has its backends timed in one; eager decode, eagerly."""
    from ctxscope.agent.engine import attention

    asked: list[bool] = []
    calibrate = attention.calibrate

    def spy(*args, decode_in_graph: bool = True, **kwargs):
        asked.append(decode_in_graph)
        return calibrate(*args, decode_in_graph=decode_in_graph, **kwargs)

    monkeypatch.setattr(attention, "calibrate", spy)
    result = run_plan(make_plan(decode=decode, decode_tokens=0), MemorySink(), progress=False, device="cpu")
    assert asked == [in_graph]
    assert result.results[0].implementation["attention_trial_timing_decode"].startswith("mean of 10 eager")
    assert "decode/math" in result.results[0].details["attention_trials"]  # times: not in the series key
    assert not any(key.startswith("attention_trial_decode") for key in result.results[0].implementation)
    attention.reset()


class BusyGpuObserver(CountingObserver):
    """An observer whose idle windows all found the GPU busy (another process computing on it)."""

    def idle_power(self, seconds: float) -> Metric | None:
        raise DeviceBusy("GPU utilization 97% on average (up to 100%, nvml0) while nothing of this run ran")


def test_a_busy_gpu_gives_no_idle_power_and_the_record_says_why(make_plan) -> None:
    summary = run_plan(make_plan(), MemorySink(), observer=BusyGpuObserver(), progress=False, device="cpu")
    (result,) = summary.results
    assert "idle_power" not in result.metrics
    assert not any("above_idle" in name for name in result.metrics)
    assert "the GPU was busy (GPU utilization 97%" in result.details["idle_power"]


@pytest.mark.parametrize("isolate", ["never", "always"])
def test_a_point_that_fails_after_the_load_names_the_implementation(
    make_plan, monkeypatch: pytest.MonkeyPatch, isolate: str
) -> None:
    """A Mamba-family model on the CPU runs transformers' torch code: a point of it that fails (here an
    emulated out-of-memory error in the prefill) says so as an ok point would, never silently nothing."""
    monkeypatch.setenv("CTXSCOPE_ENGINE_BYTE_BUDGET", "1")
    plan = make_plan(models=["mamba2-780m"], decode_tokens=0, isolate=isolate, spread_processes=1)
    summary = run_plan(plan, MemorySink(), progress=False, device="cpu")
    (result,) = summary.results
    assert result.outcome == "oom", result.error
    assert result.implementation["runtime"] == "transformers"
    assert result.implementation["ssm_scan"] == "transformers torch fallback"
    assert result.implementation["ssm_step"] == "transformers torch fallback"


def test_a_load_that_times_out_names_the_load_not_the_point(make_plan) -> None:
    """An isolated point whose worker cannot load the model in time: the error names the load."""
    plan = make_plan(context_lengths=[16], isolate="always", decode_tokens=0, point_timeout_s=0.05)
    summary = run_plan(plan, MemorySink(), progress=False, device="cpu")
    (result,) = summary.results
    assert result.outcome == "timeout"
    assert (result.error or "").startswith(
        "load of model qwen2.5-0.5b (fp32, tiny) on cpu: no reply within 0.05 s"
    )
