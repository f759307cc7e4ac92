"""Max context by search: grow x2 from a start length, then bisect to a relative tolerance (or a
fixed step). Each probe is one prefill in a fresh child process (model loaded there, optional
memory cap), so an out-of-memory error, a CUDA fault or a hang cannot spoil the next probe.

The result names the largest length that ran, the smallest that did not and its outcome, or
says that the search was bounded by `max_tokens` when every probe up to it ran. `record_search`
runs a search as one result of a run (`agent maxctx`, or a plan's `[max_context]`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ctxscope.agent import zoo
from ctxscope.agent.engine.isolation import HostMemoryWatch, Worker, is_unified_memory_device
from ctxscope.agent.engine.outcome import Failure, Loaded, Probed
from ctxscope.agent.engine.point import ModelChoice
from ctxscope.agent.engine.protocol import LoadJob, ProbeJob
from ctxscope.agent.engine.recorder import RunRecorder
from ctxscope.agent.engine.worker import request
from ctxscope.shared.messages import Metric, PointResult


@dataclass
class Probe:
    context_len: int
    outcome: str
    wall_s: float
    peak_bytes: int | None = None
    error: str | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    """The probe's memory breakdown (weights, cache, logits, allocator, outside it) and the cap applied."""
    implementation: dict[str, str] = field(default_factory=dict)
    """What the probe's loaded model ran (runtime, kernel paths, attention); empty when it did not load."""


_MEMORY_FIELDS = (
    "weights_bytes",
    "cache_bytes",
    "logits_bytes",
    "allocator_reserved_bytes",
    "outside_allocator_bytes",
    "outside_allocator_method",
)


@dataclass
class SearchResult:
    largest_ok: int | None
    smallest_failing: int | None
    failing_outcome: str | None
    bounded_by: str | None
    probes: list[Probe] = field(default_factory=list)

    def summary(self) -> str:
        if self.largest_ok is None:
            return f"nothing fits: {self.smallest_failing} -> {self.failing_outcome}"
        if self.bounded_by is not None:
            return f">= {self.largest_ok} tokens, bounded by {self.bounded_by}"
        return f"{self.largest_ok} tokens (next {self.smallest_failing}: {self.failing_outcome})"

    def to_dict(self) -> dict[str, Any]:
        """The search for a record's details; the probes' implementation is the record's own."""
        probes = [{k: v for k, v in asdict(p).items() if k != "implementation"} for p in self.probes]
        return {**asdict(self), "probes": probes, "summary": self.summary()}

    def implementation(self) -> dict[str, str]:
        """What the probes ran: the first loaded probe's implementation."""
        return next((dict(p.implementation) for p in self.probes if p.implementation), {})

    def differing_implementations(self) -> list[dict[str, str]]:
        """Every loaded probe's implementation when they are not all alike (else empty)."""
        loaded = [p.implementation for p in self.probes if p.implementation]
        return [dict(i) for i in loaded] if any(i != loaded[0] for i in loaded) else []


def search(
    probe: Callable[[int], Probe],
    *,
    start: int = 1024,
    max_tokens: int = 1_048_576,
    rel_tol: float = 0.01,
    step: int | None = None,
    upper_guess: int | None = None,
    on_probe: Callable[[Probe], None] | None = None,
) -> SearchResult:
    """Grow x2 from `start` until a probe fails or `max_tokens` is reached, then bisect until the
    gap is at most `step` tokens (or `rel_tol` of the largest length that ran).

    `upper_guess`, when given, is probed right after `start` instead of twice it: a start just below
    the expected limit and a guess just above it leave a narrow interval to bisect."""
    if start < 1 or max_tokens < start:
        raise ValueError("need 1 <= start <= max_tokens")
    if upper_guess is not None and upper_guess <= start:
        raise ValueError("upper_guess must be above start")
    if step is not None and step < 1:
        raise ValueError(f"step {step} must be >= 1 token: a gap of 0 is never reached")
    probes: list[Probe] = []

    def run(length: int) -> Probe:
        result = probe(length)
        probes.append(result)
        if on_probe is not None:
            on_probe(result)
        return result

    ok: int | None = None
    failing: Probe | None = None
    length = start
    while True:
        result = run(length)
        if result.outcome != "ok":
            failing = result
            break
        ok = length
        if length >= max_tokens:
            return SearchResult(ok, None, None, f"max_tokens={max_tokens}", probes)
        grown = upper_guess if upper_guess is not None and length == start else length * 2
        length = min(grown, max_tokens)

    low = ok or 0
    while True:
        gap = failing.context_len - low
        allowed = step if step is not None else max(math.floor(rel_tol * max(low, 1)), 1)
        if gap <= allowed:
            break
        mid = (low + failing.context_len) // 2
        result = run(mid)
        if result.outcome == "ok":
            low = ok = mid
        else:
            failing = result
    return SearchResult(ok, failing.context_len, failing.outcome, None, probes)


def index_limit_note(length: int | None, outcome: str | None, index_limit: int | None) -> str | None:
    """A note when a prefill of `length` tokens faulted past the zoo's int32 limit of mamba_ssm's SSD
    kernels (`ssd_int32_limit_tokens`): the likely cause is then the kernels' indexing, not memory."""
    if index_limit is None or outcome != "fault" or length is None or length <= index_limit:
        return None
    return f"the fault lies past {index_limit} tokens, where mamba_ssm's SSD kernels overflow int32 offsets"


def isolated_probe(
    choice: ModelChoice,
    *,
    logits: Literal["last", "all"],
    memory_cap_bytes: int | None,
    timeout_s: float,
    env: dict[str, str] | None = None,
    seed: int = 0,
) -> Callable[[int], Probe]:
    """A probe that loads the model in a fresh child and runs one prefill at the given length."""
    watch = HostMemoryWatch() if is_unified_memory_device() else None

    def probe(length: int) -> Probe:
        with Worker(env=env, host_watch=watch) as worker:
            loaded = request(
                worker, LoadJob(choice=choice, memory_cap_bytes=memory_cap_bytes), Loaded, timeout_s
            )
            if isinstance(loaded, Failure):
                return Probe(length, loaded.outcome, loaded.wall_s, error=loaded.error)
            probed = request(
                worker, ProbeJob(context_len=length, logits=logits, seed=seed), Probed, timeout_s
            )
        ran = dict(loaded.implementation)
        if isinstance(probed, Failure):
            return Probe(length, probed.outcome, probed.wall_s, error=probed.error, implementation=ran)
        fields = probed.model_dump(include=set(_MEMORY_FIELDS), exclude_none=True)
        memory: dict[str, Any] = {**fields, **({"cap": loaded.cap} if loaded.cap else {})}
        return Probe(
            length, probed.outcome, probed.wall_s, probed.peak_bytes, memory=memory, implementation=ran
        )

    return probe


@dataclass(frozen=True)
class SearchSettings:
    """How one search runs: its bounds and stopping gap, each probe's logits, cap, timeout and seed."""

    start: int = 1024
    max_tokens: int = 1_048_576
    rel_tol: float = 0.01
    step: int | None = None
    upper_guess: int | None = None
    probe_timeout_s: float = 120.0
    memory_cap_bytes: int | None = None
    logits: Literal["last", "all"] = "last"
    seed: int = 0

    def method(self, bounded_by: str | None) -> str:
        tolerance = f"{self.step} tokens" if self.step is not None else f"{self.rel_tol:.1%}"
        guess = f" (then {self.upper_guess})" if self.upper_guess is not None else ""
        # a search stopped by max_tokens found no limit: its figure is a lower bound
        bound = f"; lower bound, {bounded_by}" if bounded_by else ""
        cap = (
            "no memory cap"
            if self.memory_cap_bytes is None
            else f"memory cap {self.memory_cap_bytes} B of the process's device memory, CUDA context included"
        )
        return (
            f"grow x2 from {self.start}{guess}, bisect to {tolerance}; each probe one prefill "
            f"(logits={self.logits}) in a fresh child process; {cap}{bound}"
        )


def record_search(
    run: RunRecorder,
    choice: ModelChoice,
    family: str,
    settings: SearchSettings,
    *,
    env: dict[str, str] | None = None,
    on_probe: Callable[[Probe], None] | None = None,
) -> tuple[PointResult, SearchResult]:
    """Search `choice`'s max context as one step of `run` (announced by the caller), and emit its
    result: the length found as a `max_context` metric in tokens, the probes in `details.search`."""
    probe = isolated_probe(
        choice,
        logits=settings.logits,
        memory_cap_bytes=settings.memory_cap_bytes,
        timeout_s=settings.probe_timeout_s,
        env=env,
        seed=settings.seed,
    )
    result = search(
        probe,
        start=settings.start,
        max_tokens=settings.max_tokens,
        rel_tol=settings.rel_tol,
        step=settings.step,
        upper_guess=settings.upper_guess,
        on_probe=on_probe,
    )
    index_limit = zoo.ssd_int32_limit_tokens(zoo.spec_for(choice.name, tiny=choice.tiny))
    note = index_limit_note(result.smallest_failing, result.failing_outcome, index_limit)
    # the worker caps a CUDA device's memory only (`devicemem`): elsewhere the cap was asked for, not applied
    uncapped = settings.memory_cap_bytes is not None and not cap_applies(choice.device)
    applied = replace(settings, memory_cap_bytes=None) if uncapped else settings
    method = applied.method(result.bounded_by)
    if uncapped:
        asked = f"no memory cap (the {settings.memory_cap_bytes} B asked for caps CUDA device memory only)"
        method = method.replace("no memory cap", asked, 1)
    metrics = {}
    if result.largest_ok is not None:
        metrics["max_context"] = Metric(unit="tokens", method=method, samples=[float(result.largest_ok)])
    differing = result.differing_implementations()
    record = run.result(
        point_id=f"{choice.name}/{choice.precision}/max-context",
        model=choice.name,
        family=family,
        context_len=result.largest_ok or result.smallest_failing or settings.start,
        precision=choice.precision,
        logits=settings.logits,
        outcome="ok" if result.largest_ok is not None else (result.failing_outcome or "fault"),
        metrics=metrics,
        implementation=result.implementation(),
        details={
            "kind": "max_context",
            "memory_cap_bytes": applied.memory_cap_bytes,
            **({"memory_cap_not_applied_bytes": settings.memory_cap_bytes} if uncapped else {}),
            "search": result.to_dict(),
            "ssd_int32_limit_tokens": index_limit,
            **({"limit_note": note} if note else {}),
            **({"probe_implementations": differing} if differing else {}),
        },
    )
    return record, result


def cap_applies(device: str) -> bool:
    """Whether a memory cap can be applied on `device`: the worker caps CUDA device memory only."""
    return device.startswith("cuda")
