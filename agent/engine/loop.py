"""The one measurement loop: warm-ups, then repetitions until the median is stable.

Every phase (prefill, decode) is timed by this loop; a phase is a callable run `inner` times per
repetition. A repetition's sample is its duration divided by `inner`. The loop stops when a minimum
count and a minimum duration are both reached and the running median moved less than
`stable_rel` at the last repetition, or at a cap (count, or time once the minimum count is in).
When an observer needs long windows, a repetition whose window came out too short is discarded; at
most `2 * max_reps` repetitions are tried, so that loop can end with fewer than `min_reps` samples,
and its stop reason and `shortfall` say so. Each repetition is one PhaseWindow on the monotonic clock,
so a telemetry observer can integrate energy inside it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ctxscope.agent.phases import PhaseWindow


@dataclass(frozen=True)
class LoopPolicy:
    """Stopping rules of the loop; durations in seconds."""

    warmups: int = 2
    min_reps: int = 5
    max_reps: int = 100
    min_time_s: float = 0.2
    max_time_s: float = 30.0
    stable_rel: float = 0.02

    def __post_init__(self) -> None:
        if self.warmups < 0 or self.min_reps < 1 or self.max_reps < self.min_reps:
            raise ValueError("need warmups >= 0 and 1 <= min_reps <= max_reps")
        if self.min_time_s < 0 or self.max_time_s <= 0 or self.stable_rel <= 0:
            raise ValueError("need min_time_s >= 0, max_time_s > 0 and stable_rel > 0")


@dataclass
class LoopResult:
    """Per-repetition samples (ns per run of the phase), their windows and why the loop stopped."""

    samples_ns: list[float]
    windows: list[PhaseWindow]
    inner: int
    stop_reason: str
    medians: list[float] = field(default_factory=list)
    min_reps: int = 1

    @property
    def shortfall(self) -> str:
        """A method-string note when the loop kept fewer samples than its policy's `min_reps`, else ""."""
        if len(self.samples_ns) >= self.min_reps:
            return ""
        return (
            f"only {len(self.samples_ns)} samples, fewer than min_reps {self.min_reps} ({self.stop_reason})"
        )

    @property
    def median_ns(self) -> float:
        return float(statistics.median(self.samples_ns))

    def sample_phrase(self, one: str, many: str) -> str:
        """What one sample is, from the windows' repetition counts (`sample_phrase`)."""
        return sample_phrase(self.windows, one, many)


# what one sample of a timed metric is, in its method string: (one run of the phase, several of them)
SAMPLE_WORDS = {"ttft": ("one prefill", "prefills"), "decode_per_token": ("one greedy step", "greedy steps")}


def sample_phrase(windows: list[PhaseWindow], one: str, many: str) -> str:
    """What one sample is, from the windows' repetition counts: `one` when every window ran the phase
    once, else "mean of k back-to-back <many>" with the k each window held."""
    counts = sorted({w.repetitions for w in windows})
    if counts == [1]:
        return one
    ks = "/".join(map(str, counts))
    return f"mean of {ks} back-to-back {many} (one window each)"


class Timer:
    """Device-accurate elapsed time: CUDA events on a GPU, perf_counter_ns on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.method = "CUDA events" if self.cuda else "time.perf_counter_ns"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time_ns(self, body: Callable[[], None]) -> tuple[float, int, int]:
        """Run `body` once; return (elapsed ns, window start, window end) on the monotonic clock."""
        self.sync()
        if self.cuda:
            start_ev = torch.cuda.Event(enable_timing=True)
            end_ev = torch.cuda.Event(enable_timing=True)
            start_ns = time.monotonic_ns()
            start_ev.record()
            body()
            end_ev.record()
            end_ev.synchronize()
            end_ns = time.monotonic_ns()
            return start_ev.elapsed_time(end_ev) * 1e6, start_ns, end_ns
        start_ns = time.monotonic_ns()
        t0 = time.perf_counter_ns()
        body()
        elapsed = time.perf_counter_ns() - t0
        return float(elapsed), start_ns, time.monotonic_ns()


def stable(medians: list[float], rel: float) -> bool:
    """True when the last running median moved less than `rel` relative to the one before."""
    if len(medians) < 2 or medians[-2] == 0:
        return False
    return abs(medians[-1] - medians[-2]) / medians[-2] < rel


_CALIBRATION_MARGIN = 1.25
_CALIBRATION_TRIES = 6


def _calibrate(repetition: Callable[[int], tuple[float, int, int]], inner: int, min_window_ns: int) -> int:
    """Raise `inner` until one repetition's window spans `min_window_ns`, with a margin."""
    for _ in range(_CALIBRATION_TRIES):
        _, start_ns, end_ns = repetition(inner)
        span = max(end_ns - start_ns, 1)
        if span >= min_window_ns * _CALIBRATION_MARGIN:
            break
        inner = max(inner + 1, math.ceil(inner * min_window_ns * _CALIBRATION_MARGIN / span))
    return inner


def measure(
    run_once: Callable[[], None],
    *,
    name: str,
    tokens_per_run: int,
    timer: Timer,
    policy: LoopPolicy,
    inner: int = 1,
    min_window_ns: int = 0,
    prepare: Callable[[], None] | None = None,
) -> LoopResult:
    """Time `run_once` under `policy`.

    `prepare` runs untimed before each repetition (e.g. rewinding a decode cache). When
    `min_window_ns` is set (a telemetry observer needs long windows), `inner` is raised after the
    warm-ups so that one repetition spans at least that long; a later repetition that falls short
    is discarded and `inner` raised again.
    """

    def repetition(count: int) -> tuple[float, int, int]:
        if prepare is not None:
            prepare()

        def body() -> None:
            for _ in range(count):
                run_once()

        return timer.time_ns(body)

    for _ in range(policy.warmups):
        repetition(inner)
    if min_window_ns > 0:
        inner = _calibrate(repetition, inner, min_window_ns)

    samples: list[float] = []
    windows: list[PhaseWindow] = []
    medians: list[float] = []
    started = time.monotonic()
    reason = "max_reps"
    attempts = 0
    max_attempts = 2 * policy.max_reps
    while len(samples) < policy.max_reps:
        if attempts >= max_attempts:
            reason = _attempt_limit(attempts, len(samples), min_window_ns)
            break
        attempts += 1
        elapsed, start_ns, end_ns = repetition(inner)
        if end_ns - start_ns < min_window_ns:
            # The phase sped up after calibration: this window is too short for the observer.
            inner = max(
                inner + 1, math.ceil(inner * min_window_ns * _CALIBRATION_MARGIN / max(end_ns - start_ns, 1))
            )
            continue
        samples.append(elapsed / inner)
        windows.append(PhaseWindow(name, start_ns, end_ns, tokens=tokens_per_run * inner, repetitions=inner))
        medians.append(statistics.median(samples))
        spent = time.monotonic() - started
        if len(samples) < policy.min_reps:
            continue  # the minimum count holds even past max_time_s: no point has fewer samples
        if spent >= policy.max_time_s:
            reason = "max_time"
            break
        if spent >= policy.min_time_s and stable(medians, policy.stable_rel):
            reason = "stable"
            break
    if not samples:
        raise RuntimeError(f"{name}: no sample kept, {reason}")
    return LoopResult(samples, windows, inner, reason, medians, policy.min_reps)


def _attempt_limit(attempts: int, kept: int, min_window_ns: int) -> str:
    """The stop reason of a loop that ran out of attempts: windows kept falling short."""
    return (
        f"max_attempts: {attempts} repetitions tried, {kept} kept; "
        f"the others' windows were shorter than {min_window_ns} ns"
    )
