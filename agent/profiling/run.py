"""Profiles a loaded model over context lengths and phases, and turns each point into a result.

Per point: the profiling pass (torch.profiler, its own warm-up), then, apart from it, a short timed
pass with the engine's measurement loop whose latency the roofline divides by. A decode step is
profiled on the engine's decoder at the measured context.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ctxscope.agent.engine import decoding, forward
from ctxscope.agent.engine.autotune import autotune_choices
from ctxscope.agent.engine.loop import SAMPLE_WORDS, LoopPolicy, Timer, measure
from ctxscope.agent.engine.outcome import ProfiledLength
from ctxscope.agent.engine.point import ModelChoice, Session, classify, error_text, free
from ctxscope.agent.engine.recorder import RunRecorder
from ctxscope.agent.profiling.profile import PhaseProfile, profile_phase
from ctxscope.agent.profiling.roofline import Peaks, Phase, Work, class_rooflines, pass_work, roofline
from ctxscope.agent.zoo.architectures import arch_shape
from ctxscope.agent.zoo.shapes import ArchShape
from ctxscope.shared.messages import Metric, Outcome, PointResult

TIMED_POLICY = LoopPolicy(warmups=0, min_reps=3, max_reps=10, min_time_s=0.0, max_time_s=5.0)


@dataclass(frozen=True)
class ProfileSettings:
    lengths: tuple[int, ...]
    phases: tuple[Phase, ...] = ("prefill",)
    logits: decoding.LogitsMode = "last"
    iterations: int = 3
    decode: decoding.DecodePreference = "eager"
    timed_policy: LoopPolicy | None = TIMED_POLICY
    trace_dir: Path | None = None
    seed: int = 0


@dataclass
class PhasePoint:
    """One phase at one context length: its operator shares, timed latency and roofline."""

    profile: PhaseProfile
    latency: Metric | None
    roofline: dict[str, Any]
    implementation: str


@dataclass
class PointProfile:
    """The phases profiled at one length; a phase that failed is named in `failed` with its error.
    The point's outcome is that of its first phase (prefill when profiled)."""

    context_len: int
    phases: dict[str, PhasePoint] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    outcome: Outcome = "ok"
    error: str | None = None
    autotune: list[dict[str, Any]] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "kind": "profile",
            "operators": {name: p.profile.to_details() for name, p in self.phases.items()},
            "roofline": {name: p.roofline for name, p in self.phases.items()},
        }
        if self.failed:
            details["failed_phases"] = dict(self.failed)
        if self.autotune:
            details["triton_autotune"] = self.autotune
        return details


def profile_session(
    session: Session,
    settings: ProfileSettings,
    peaks: Peaks | None,
    on_step: Callable[[str], None] = lambda _label: None,
) -> Iterator[PointProfile]:
    """Yields one PointProfile per context length; `on_step` hears each phase's label before it starts.
    Out-of-memory ends a phase as `oom`, any other error as `fault`; a CUDA fault may poison the
    context, so the caller isolates runs in a process."""
    shape = arch_shape(session.spec)
    for length in settings.lengths:
        point = PointProfile(length)
        for phase in settings.phases:
            on_step(f"{phase} @ {length} tokens")
            try:
                with torch.inference_mode():
                    point.phases[phase] = _phase_point(session, settings, phase, length, shape, peaks)
            except Exception as exc:  # a failed phase is a result too; the next phase or length goes on
                kind, error = classify(exc), error_text(exc)
                point.failed[phase] = f"{kind}: {error}"
                if phase == settings.phases[0]:
                    point.outcome, point.error = kind, error
            free(session.device)
        point.autotune = autotune_choices()
        yield point


def _phase_point(
    session: Session,
    settings: ProfileSettings,
    phase: Phase,
    length: int,
    shape: ArchShape,
    peaks: Peaks | None,
) -> PhasePoint:
    ids = decoding.synthetic_prompt(session.vocab_size, length, seed=settings.seed, device=session.device)
    trace_path = None
    if settings.trace_dir is not None:
        trace_path = settings.trace_dir / f"{session.spec.name}-{phase}-{length}-{uuid.uuid4().hex[:8]}.json"
    if phase == "prefill":

        def run() -> None:
            forward.prefill(session.runtime, session.module, ids, settings.logits)

        implementation = f"{session.runtime} forward, logits={settings.logits}"
        prepare = None
    else:
        decoder = forward.make_decoder(
            session.runtime, session.module, ids, window=1, preference=settings.decode
        )

        def run() -> None:
            decoder.rewind()
            decoder.step()

        implementation = decoder.path
        prepare = decoder.rewind
    profile = profile_phase(
        run,
        phase=phase,
        context_len=length,
        module=session.module,
        iterations=settings.iterations,
        trace_path=trace_path,
    )
    latency = None
    if settings.timed_policy is not None:
        timer = Timer(session.device)
        loop = measure(
            run if phase == "prefill" else decoder.step,
            name=phase,
            tokens_per_run=length if phase == "prefill" else 1,
            timer=timer,
            policy=settings.timed_policy,
            prepare=prepare,
        )
        # what one sample is, as the engine's points say it
        if phase == "prefill":
            sample = f"{loop.sample_phrase(*SAMPLE_WORDS['ttft'])} of {length} random tokens, batch 1"
        else:
            sample = f"{loop.sample_phrase(*SAMPLE_WORDS['decode_per_token'])} at context {length}, batch 1"
        latency = Metric(
            unit="ms",
            method=f"{timer.method}; timed pass apart from the profiling pass; {implementation}; {sample}",
            samples=[s / 1e6 for s in loop.samples_ns],
        )
    work = pass_work(shape, phase, length, session.choice.precision, settings.logits)
    figures = {
        "implementation": implementation,
        **_roofline_figures(work, profile, latency, peaks, session.choice.precision),
    }
    return PhasePoint(profile, latency, figures, implementation)


def _roofline_figures(
    work: Work, profile: PhaseProfile, latency: Metric | None, peaks: Peaks | None, precision: str
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if latency is not None:
        figures["over_latency"] = roofline(
            work, latency.median / 1e3, peaks, precision, "median latency of the timed pass"
        )
    busy_ns = [p.timeline.device_busy_ns for p in profile.passes if p.timeline.device_busy_ns is not None]
    if busy_ns:
        figures["over_device_busy"] = roofline(
            work,
            statistics.median(busy_ns) / 1e9,
            peaks,
            precision,
            "median device busy time of the profiling passes (union of kernel intervals)",
        )
        figures["by_class"] = class_rooflines(work, profile.class_time_ns(), peaks, precision)
    return figures


def profiled_length(session: Session, point: PointProfile) -> ProfiledLength:
    """One profiled length as a result's body: operators and roofline in its details, each phase's
    timed latency and device time as metrics."""
    metrics: dict[str, Metric] = {}
    implementation = session.implementation()
    for name, phase in point.phases.items():
        if phase.latency is not None:
            metrics[f"profile_{name}_latency"] = phase.latency
        metrics[f"profile_{name}_device_time"] = Metric(
            unit="ms",
            method=f"sum of device time per profiling pass ({phase.profile.source})",
            samples=[s.total_ns / 1e6 for s in phase.profile.per_pass],
        )
        implementation[f"profile_{name}"] = phase.implementation
    return ProfiledLength(
        context_len=point.context_len,
        outcome=point.outcome,
        error=point.error,
        metrics=metrics,
        implementation=implementation,
        details=point.details(),
    )


def emit_profiled(
    run: RunRecorder, choice: ModelChoice, family: str, logits: decoding.LogitsMode, profiled: ProfiledLength
) -> PointResult:
    """One profiled length as a result of `run`, named as the run names the model (a shrunk model's
    result carries the real name; its run's plan says `tiny`)."""
    return run.result(
        point_id=f"{choice.name}/{choice.precision}/{profiled.context_len}/profile",
        model=choice.name,
        family=family,
        precision=choice.precision,
        logits=logits,
        context_len=profiled.context_len,
        outcome=profiled.outcome,
        error=profiled.error,
        metrics=profiled.metrics,
        implementation=profiled.implementation,
        details=profiled.details,
    )


def plan_profile(
    session: Session, phases: list[Phase], lengths: list[int], logits: decoding.LogitsMode, iterations: int
) -> list[ProfiledLength]:
    """A plan's operator profiles of one model, one per length (the engine's worker returns them to
    its parent this way). Eager decode, so that kernels keep their module labels."""
    from ctxscope.agent.profiling.roofline import device_description, find_peaks

    settings = ProfileSettings(
        lengths=tuple(lengths), phases=tuple(phases), logits=logits, iterations=iterations
    )
    peaks = find_peaks(device_description(str(session.device)))
    return [profiled_length(session, point) for point in profile_session(session, settings, peaks)]
