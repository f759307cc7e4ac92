"""The profiling pass: runs one phase under torch.profiler and returns device time per operator class.

It is a pass of its own, apart from the timed passes: nothing measured here is a latency. Each
iteration runs inside a host range `ctxscope::pass::<phase>#<i>`; modules named by the classifier's
module rules (the LM head, norms) run inside `ctxscope::module::<label>` ranges so their kernels can be
told apart from the same kernels elsewhere. The Chrome trace is written to a temporary file and
parsed; it is kept only when a trace path is given (it stays on the device and is never streamed).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ctxscope.agent.profiling.classify import KernelClassifier, OperatorShares, operator_shares
from ctxscope.agent.profiling.trace import PASS_PREFIX, DeviceTimeSource, PassTrace, parse_trace

MODULE_PREFIX = "ctxscope::module::"


@dataclass(frozen=True)
class PhaseProfile:
    """Device time per operator class of one phase at one context length, over several passes."""

    phase: str
    context_len: int
    source: DeviceTimeSource
    passes: tuple[PassTrace, ...]
    per_pass: tuple[OperatorShares, ...]
    shares: OperatorShares
    trace_path: str | None

    def class_time_ns(self) -> dict[str, int]:
        """Median device time per class over the passes."""
        classes = {c.cls for s in self.per_pass for c in s.classes}
        return {cls: round(statistics.median(s.time_ns(cls) for s in self.per_pass)) for cls in classes}

    def to_details(self) -> dict[str, Any]:
        """The result's `operators` entry: shares over all passes, per-pass class times, host timeline."""
        details = self.shares.to_details()
        for cls, row in details["classes"].items():
            row["time_ms_per_pass"] = [s.time_ns(cls) / 1e6 for s in self.per_pass]
        kind = "CUDA kernels, copies and memsets" if self.source == "cuda_kernels" else "CPU ops' self time"
        details |= {
            "phase": self.phase,
            "context_len": self.context_len,
            "device_time_source": self.source,
            "passes": len(self.passes),
            "method": (
                "torch.profiler pass apart from the timed passes; share = class device time / total device "
                f"time over all passes ({kind})"
            ),
            "host": [p.timeline.to_details() for p in self.passes],
            "trace_path": self.trace_path,
        }
        return details


@contextmanager
def labelled_modules(module: torch.nn.Module | None, classifier: KernelClassifier) -> Iterator[int]:
    """Opens a host range `ctxscope::module::<label>` around each forward of the modules that the
    classifier's module rules name. Yields how many modules were labelled."""
    if module is None:
        yield 0
        return
    handles = []
    open_ranges: list[record_function] = []

    def enter(label: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            scope = record_function(MODULE_PREFIX + label)
            scope.__enter__()
            open_ranges.append(scope)

        return hook

    def leave(*_: Any) -> None:
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    for qualified, child in module.named_modules():
        attribute = qualified.rsplit(".", 1)[-1]
        rule = next((r for r in classifier.module_rules if r.matches(attribute, type(child).__name__)), None)
        if rule is not None:
            handles.append(child.register_forward_pre_hook(enter(rule.label)))
            handles.append(child.register_forward_hook(leave))
    try:
        yield len(handles) // 2
    finally:
        for handle in handles:
            handle.remove()
        while open_ranges:
            open_ranges.pop().__exit__(None, None, None)


def profile_phase(
    run: Callable[[], object],
    *,
    phase: str,
    context_len: int,
    module: torch.nn.Module | None = None,
    iterations: int = 3,
    warmup: int = 1,
    classifier: KernelClassifier | None = None,
    trace_path: Path | None = None,
) -> PhaseProfile:
    """Profiles `run` (one prefill, or one decode step) `iterations` times after `warmup` runs.

    `run` must leave the model ready for the next call (a decode step restores its cache). Kernels
    are attributed to a pass by the host range open when they were launched, so the synchronize that
    waits for them runs outside the pass range and is not counted as the pass's own sync.
    """
    classifier = classifier or KernelClassifier.default()
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        run()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with ExitStack() as stack:
        stack.enter_context(labelled_modules(module, classifier))
        prof = stack.enter_context(profile(activities=activities))
        for i in range(iterations):
            with record_function(f"{PASS_PREFIX}{phase}#{i}"):
                run()
            if cuda:
                torch.cuda.synchronize()
    trace = _export(prof, trace_path)
    passes = tuple(p for p in parse_trace(trace) if p.label.startswith(f"{phase}#"))
    if len(passes) != iterations:
        raise RuntimeError(f"found {len(passes)} of {iterations} profiled {phase} passes in the trace")
    return PhaseProfile(
        phase=phase,
        context_len=context_len,
        source=passes[0].source,
        passes=passes,
        per_pass=tuple(operator_shares(p.events, classifier) for p in passes),
        shares=operator_shares((e for p in passes for e in p.events), classifier),
        trace_path=str(trace_path) if trace_path is not None else None,
    )


def _export(prof: profile, trace_path: Path | None) -> dict[str, Any]:
    if trace_path is not None:
        trace_path.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace_path))
        return dict(json.loads(trace_path.read_text(encoding="utf-8")))
    with tempfile.TemporaryDirectory(prefix="ctxscope-trace-") as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        return dict(json.loads(path.read_text(encoding="utf-8")))
