"""The Chrome trace reader: kernels linked to their launching host ranges, gaps and syncs apart."""

from __future__ import annotations

from typing import Any

import pytest

from ctxscope.agent.profiling.trace import parse_trace

HOST = {"pid": 100, "tid": 100}
GPU = {"pid": 0, "tid": 7}


def _x(cat: str, name: str, ts: float, dur: float, where: dict[str, int], **args: Any) -> dict[str, Any]:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, **where, "args": args}


def _launch(name: str, ts: float, correlation: int, dur: float = 2.0) -> dict[str, Any]:
    return _x("cuda_runtime", name, ts, dur, HOST, correlation=correlation)


def _kernel(name: str, ts: float, dur: float, correlation: int, stream: int = 7) -> dict[str, Any]:
    return _x("kernel", name, ts, dur, GPU, correlation=correlation, stream=stream)


def _trace() -> dict[str, Any]:
    """Two passes: the first launches a GEMM under aten::mm and the LM head's GEMM under its module
    range, then syncs; the second launches one scan kernel through the driver API (Triton)."""
    events = [
        {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPU 0"}},
        _x("user_annotation", "ctxscope::pass::prefill#0", 1000.0, 200.0, HOST),
        _x("cpu_op", "aten::mm", 1010.0, 20.0, HOST),
        _launch("cudaLaunchKernel", 1015.0, 1),
        _x("user_annotation", "ctxscope::module::lm_head", 1050.0, 30.0, HOST),
        _x("cpu_op", "aten::mm", 1055.0, 20.0, HOST),
        _launch("cudaLaunchKernel", 1060.0, 2),
        _launch("cudaStreamSynchronize", 1100.0, 3, dur=80.0),
        _kernel("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", 1020.0, 40.0, 1),
        _kernel("nvjet_tst_64x8_64x16_4x1_v_bz_TNN", 1070.0, 10.0, 2),
        {
            "ph": "X",
            "cat": "gpu_memcpy",
            "name": "Memcpy DtoH (Device -> Pageable)",
            "ts": 1085.0,
            "dur": 5.0,
            **GPU,
            "args": {"correlation": 3, "stream": 7},
        },
        _x("user_annotation", "ctxscope::pass::prefill#1", 2000.0, 100.0, HOST),
        _x("cuda_driver", "cuLaunchKernel", 2010.0, 3.0, HOST, correlation=4),
        _kernel("_chunk_scan_fwd_kernel", 2020.0, 30.0, 4, stream=9),
        # launched outside any pass: belongs to none
        _launch("cudaLaunchKernel", 3000.0, 5),
        _kernel("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", 3005.0, 40.0, 5),
    ]
    return {"traceEvents": events}


def test_passes_hold_the_kernels_launched_inside_them() -> None:
    first, second = parse_trace(_trace())
    assert (first.label, second.label) == ("prefill#0", "prefill#1")
    assert first.source == second.source == "cuda_kernels"
    assert [e.name for e in first.events] == [
        "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT",
        "nvjet_tst_64x8_64x16_4x1_v_bz_TNN",
        "Memcpy DtoH (Device -> Pageable)",
    ]
    assert [e.name for e in second.events] == ["_chunk_scan_fwd_kernel"]
    assert second.events[0].stream == 9


def test_kernels_carry_the_host_ranges_open_at_launch() -> None:
    first, _ = parse_trace(_trace())
    gemm, lm_head, _copy = first.events
    assert gemm.scopes == ("ctxscope::pass::prefill#0", "aten::mm")
    assert lm_head.scopes == ("ctxscope::pass::prefill#0", "ctxscope::module::lm_head", "aten::mm")


def test_device_gaps_and_syncs_are_reported_apart() -> None:
    first, second = parse_trace(_trace())
    t = first.timeline
    assert t.host_span_ns == 200_000
    assert t.device_span_ns == 70_000  # 1020 .. 1090 us
    assert t.device_busy_ns == 55_000
    assert t.device_idle_ns == 15_000
    assert (t.idle_gaps, t.largest_gap_ns) == (2, 10_000)
    assert (t.sync_calls, t.sync_ns) == (1, 80_000)
    assert second.timeline.sync_calls == 0
    assert second.timeline.device_idle_ns == 0


def test_without_device_events_cpu_op_self_times_stand_in() -> None:
    events = [
        _x("user_annotation", "ctxscope::pass::prefill#0", 0.0, 100.0, HOST),
        _x("cpu_op", "aten::linear", 10.0, 50.0, HOST),
        _x("cpu_op", "aten::addmm", 15.0, 40.0, HOST),
        _x("cpu_op", "aten::silu", 70.0, 10.0, HOST),
    ]
    (only,) = parse_trace({"traceEvents": events})
    assert only.source == "cpu_ops"
    assert {e.name: e.dur_ns for e in only.events} == {
        "aten::linear": 10_000,
        "aten::addmm": 40_000,
        "aten::silu": 10_000,
    }
    assert only.timeline.device_idle_ns is None
    assert only.timeline.to_details()["device_busy_ms"] is None


@pytest.mark.parametrize("name", ["cudaDeviceSynchronize", "cudaEventSynchronize", "cuStreamSynchronize"])
def test_every_kind_of_host_sync_is_counted(name: str) -> None:
    events = [
        _x("user_annotation", "ctxscope::pass::decode#0", 0.0, 100.0, HOST),
        _launch(name, 10.0, 1, dur=30.0),
        _launch("cudaLaunchKernel", 50.0, 2),
        _kernel("nvjet_tst_64x8_64x16_4x1_v_bz_TNN", 55.0, 5.0, 2),
    ]
    (only,) = parse_trace({"traceEvents": events})
    assert (only.timeline.sync_calls, only.timeline.sync_ns) == (1, 30_000)
