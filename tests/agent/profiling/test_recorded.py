"""The classifier and the trace reader on kernels recorded from real H200 runs (see results/profiling).

`fixtures/h200_kernels.json` holds, per model, every kernel name of one profiled 4K-token prefill
with its module label, count and device time; `fixtures/h200_trace_*.json.gz` one real Chrome trace
reduced to the events and fields the reader uses (gzip-compressed).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from ctxscope.agent.profiling.classify import DeviceEvent, KernelClassifier, operator_shares
from ctxscope.agent.profiling.trace import parse_trace

FIXTURES = Path(__file__).parent / "fixtures"
# classes each model's prefill must show on the GPU (its kernel path ran natively)
EXPECTED = {
    "mamba-130m": {"ssm_scan", "conv1d", "gemm", "lm_head", "norm"},
    "mamba2-130m": {"ssm_scan", "conv1d", "gemm", "lm_head", "norm"},
    "qwen2.5-0.5b": {"attention", "gemm", "lm_head", "norm", "elementwise"},
    "falcon-h1-0.5b": {"attention", "ssm_scan", "conv1d", "gemm", "lm_head", "norm"},
    "zamba2-1.2b": {"attention", "ssm_scan", "conv1d", "gemm", "lm_head", "norm"},
}


def _recorded() -> dict[str, dict[str, Any]]:
    data = json.loads((FIXTURES / "h200_kernels.json").read_text())
    return {entry["model"]: entry for entry in data["recorded"]}


def _events(entry: dict[str, Any]) -> list[DeviceEvent]:
    return [
        DeviceEvent(
            k["name"], 0, k["time_ns"], scopes=(f"ctxscope::module::{k['module']}",) if k["module"] else ()
        )
        for k in entry["kernels"]
    ]


@pytest.fixture(scope="module")
def classifier() -> KernelClassifier:
    return KernelClassifier.default()


@pytest.mark.parametrize("model", sorted(_recorded()))
def test_every_recorded_kernel_name_is_matched_by_a_rule(model: str, classifier: KernelClassifier) -> None:
    unmatched = [k["name"] for k in _recorded()[model]["kernels"] if classifier.by_name(k["name"]) is None]
    assert unmatched == []


@pytest.mark.parametrize("model", sorted(_recorded()))
def test_recorded_prefills_show_their_architecture(model: str, classifier: KernelClassifier) -> None:
    shares = operator_shares(_events(_recorded()[model]), classifier)
    present = {c.cls for c in shares.classes if c.time_ns > 0}
    assert present >= EXPECTED[model]
    if "attention" not in EXPECTED[model]:
        assert "attention" not in present
    assert sum(c.share_pct for c in shares.classes) == pytest.approx(100.0)
    assert not shares.unclassified


@pytest.mark.parametrize(
    "entry",
    json.loads((FIXTURES / "h200_unclassified_before.json").read_text())["kernels"],
    ids=lambda e: f"{e['model']}-{e['phase']}",
)
def test_kernels_a_recorded_run_left_unclassified_now_have_their_class(
    entry: dict[str, Any], classifier: KernelClassifier
) -> None:
    assert classifier.by_name(entry["name"]) == entry["class"]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("h200_trace_*.json.gz")), ids=lambda p: p.name)
def test_a_recorded_trace_reads_into_kernel_passes(path: Path, classifier: KernelClassifier) -> None:
    passes = parse_trace(json.loads(gzip.decompress(path.read_bytes())))
    assert passes
    for p in passes:
        assert p.source == "cuda_kernels"
        assert p.events
        t = p.timeline
        assert t.device_busy_ns is not None and t.device_span_ns is not None
        assert 0 < t.device_busy_ns <= t.device_span_ns
        assert t.device_idle_ns == t.device_span_ns - t.device_busy_ns
        shares = operator_shares(p.events, classifier)
        assert sum(c.share_pct for c in shares.classes) == pytest.approx(100.0)
        assert shares.time_ns("lm_head") > 0
        assert shares.time_ns("ssm_scan") > 0
