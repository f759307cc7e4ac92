"""Runs a plan: every point measured (in this process or a child), every record through the run's
recorder (`recorder.py`).

Records, in order: RunStarted (plan, hash, manifest), then per point a RunProgress and a
PointResult; per model and precision, when the plan asks for them, its operator profiles (one
RunProgress, one PointResult per length) and its max-context search (one RunProgress, one
PointResult); then RunFinished. A point that fails (oom, fault, timeout) is recorded and the sweep
goes on; a worker that died or hung is replaced for the next point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ctxscope.agent import zoo
from ctxscope.agent.engine import idle, maxctx, point, spread
from ctxscope.agent.engine.isolation import HostMemoryWatch, Worker, is_unified_memory_device
from ctxscope.agent.engine.outcome import Failure, Loaded, Measured, Profiled, ProfiledLength
from ctxscope.agent.engine.plan import Plan, PlanPoint
from ctxscope.agent.engine.protocol import LoadJob, PointJob, ProfileJob
from ctxscope.agent.engine.recorder import RunRecorder
from ctxscope.agent.engine.worker import request
from ctxscope.agent.phases import PhaseObserver
from ctxscope.agent.records import RecordSink
from ctxscope.shared.messages import PointResult


@dataclass
class RunSummary:
    run_id: str
    plan_hash: str
    points_ok: int = 0
    points_failed: int = 0
    results: list[PointResult] = field(default_factory=list)
    max_context: dict[str, maxctx.SearchResult] = field(default_factory=dict)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


Ran = tuple[Measured | Failure, dict[str, Any]]  # a point's outcome, and the worker's load figures


class _Group:
    """Runs the points of one model and precision, in-process or in a reusable worker."""

    def __init__(self, plan: Plan, choice: point.ModelChoice, min_window_ns: int) -> None:
        self.plan = plan
        self.choice = choice
        self.min_window_ns = min_window_ns
        self.index_limit = zoo.ssd_int32_limit_tokens(zoo.spec_for(choice.name, tiny=choice.tiny))
        self.session: point.Session | None = None
        self.worker: Worker | None = None
        self.child: dict[str, Any] = {}
        # what the loaded model runs (runtime, kernel paths, attention), for a point that fails after
        # the load: its record names the implementation as an ok point's does
        self.implementation: dict[str, str] = {}

    def settings(self, length: int) -> point.PointSettings:
        return point.PointSettings(
            context_len=length,
            logits=self.plan.logits,
            decode_tokens=self.plan.decode_tokens,
            decode=self.plan.decode,
            one_row_reductions=self.plan.one_row_reductions,
            combo_kernels=self.plan.combo_kernels,
            dependent_launch=self.plan.dependent_launch,
            policy=self.plan.policy,
            seed=self.plan.seed,
            min_window_ns=self.min_window_ns,
        )

    def run(self, length: int) -> Ran:
        processes = self.plan.spread_over(length)
        if processes > 1:
            return self._spread(length, processes)
        if self.plan.isolated(length):
            return self._isolated(length)
        return self._in_process(length), {}

    def _spread(self, length: int, processes: int) -> Ran:
        """The point measured in `processes` fresh worker processes, pooled (spread.pool)."""
        measured: list[Measured] = []
        child: dict[str, Any] = {}
        for _ in range(processes):
            if self.worker is not None:  # a fresh process each time: load, calibration, caches anew
                self.worker.close()
                self.worker = None
            outcome, loaded = self._isolated(length)
            if isinstance(outcome, Failure):
                return outcome, loaded
            measured.append(outcome)
            child = child or loaded
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        return spread.pool(measured), child

    def _in_process(self, length: int) -> Measured | Failure:
        started = time.monotonic()
        try:
            measured = point.measure_point(self._session(), self.settings(length))
        except Exception as exc:  # recorded as the point's outcome; the sweep goes on
            if self.session is not None:
                point.free(self.session.device)
            return Failure(
                outcome=point.classify(exc), error=point.error_text(exc), wall_s=time.monotonic() - started
            )
        measured.wall_s = time.monotonic() - started
        return measured

    def _session(self) -> point.Session:
        """The model loaded in this process (loaded on first use)."""
        if self.session is None:
            self.implementation = {}
            self.session = point.Session(self.choice)
            self.implementation = self.session.implementation()
        return self.session

    def _loaded_worker(self) -> Worker | Failure:
        """The worker with the model loaded (started and loaded when needed), or the failed load."""
        if self.session is not None:
            device = self.session.device
            self.session = None
            point.free(device)
        if self.worker is None or not self.worker.alive:
            if self.worker is not None:
                self.worker.close()
            watch = HostMemoryWatch() if is_unified_memory_device() else None
            self.worker = Worker(host_watch=watch)
            cap = int(self.plan.memory_cap) if self.plan.memory_cap is not None else None
            loaded = request(
                self.worker,
                LoadJob(choice=self.choice, memory_cap_bytes=cap),
                Loaded,
                self.plan.point_timeout_s,
            )
            if isinstance(loaded, Failure):
                self.worker.close()
                self.worker = None
                self.implementation = {}
                return loaded
            self.child = {"load_s": loaded.load_s, **loaded.cap}
            self.implementation = dict(loaded.implementation)
        return self.worker

    def profile(self) -> list[ProfiledLength] | Failure:
        """Operator profiles at the plan's profile lengths, in a worker unless the plan says
        isolate = "never"."""
        plan = self.plan
        lengths, phases = plan.profile_lengths, list(plan.profile.phases)
        if plan.isolate == "never":
            from ctxscope.agent.profiling.run import plan_profile

            try:
                return plan_profile(self._session(), phases, lengths, plan.logits, plan.profile.iterations)
            except Exception as exc:  # recorded; the run goes on
                return Failure(outcome=point.classify(exc), error=point.error_text(exc))
        worker = self._loaded_worker()
        if isinstance(worker, Failure):
            return worker
        job = ProfileJob(
            phases=phases, lengths=lengths, logits=plan.logits, iterations=plan.profile.iterations
        )
        profiled = request(worker, job, Profiled, plan.point_timeout_s * len(lengths) * len(phases))
        return profiled if isinstance(profiled, Failure) else profiled.results

    def _isolated(self, length: int) -> Ran:
        worker = self._loaded_worker()
        if isinstance(worker, Failure):
            return worker, {}
        return request(
            worker, PointJob(settings=self.settings(length)), Measured, self.plan.point_timeout_s
        ), self.child

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.session is not None:
            device = self.session.device
            self.session = None
            point.free(device)


def run_plan(
    plan: Plan,
    sink: RecordSink,
    *,
    observer: PhaseObserver | None = None,
    progress: bool = True,
    device: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    run_id: str | None = None,
) -> RunSummary:
    """Measure every point of `plan` on `device` and emit the records through `sink`.

    `should_stop` is checked before each point: when it turns true the run ends as `cancelled` after
    the point in hand. A run that breaks on an unexpected error still ends with a `failed` record.
    """

    device = device or default_device()
    points = list(plan.points())
    groups: dict[tuple[str, str], list[PlanPoint]] = {}
    for p in points:
        groups.setdefault((p.model, p.precision), []).append(p)
    # every result counts: the measured points, each model's profiled lengths and its max-context search
    per_group = len(plan.profile_lengths) + (1 if plan.max_context.enabled else 0)
    total = len(points) + len(groups) * per_group
    recorder = RunRecorder(
        sink,
        plan=plan.model_dump(mode="json"),
        total=total,
        torch_device=device,
        run_id=run_id,
        progress_bar=progress,
    )
    searches: dict[str, maxctx.SearchResult] = {}
    min_window_ns = observer.min_window_ns if observer is not None else 0
    with recorder:
        idle_power = idle.measure_idle(observer)  # before any work
        for (model, precision), members in groups.items():
            family = zoo.get_spec(model).family
            choice = point.ModelChoice(
                name=model,
                precision=precision,
                device=device,
                tiny=plan.tiny,
                prefer_native=plan.prefer_native,
                require_fast_kernels=plan.require_fast_kernels,
                attention=plan.attention_mode,
                decode_in_graph=plan.decode != "eager",
            )
            group = _Group(plan, choice, min_window_ns)
            try:
                for p in members:
                    if should_stop():
                        recorder.cancel()
                        break
                    recorder.progress(p.label)
                    _measure_and_emit(recorder, group, p, family, observer, idle_power)
                if not recorder.cancelled and plan.profile_lengths:
                    recorder.progress(f"{model}/{precision}/profile")
                    _profile(recorder, group, family)
            finally:
                group.close()
            if recorder.cancelled:
                break
            if plan.max_context.enabled:
                recorder.progress(f"{model}/{precision}/max-context")
                searches.update(_max_context(recorder, plan, group, family))
    return RunSummary(
        recorder.run_id,
        recorder.plan_hash,
        recorder.points_ok,
        recorder.points_failed,
        recorder.results,
        searches,
    )


def _measure_and_emit(
    run: RunRecorder,
    group: _Group,
    p: PlanPoint,
    family: str,
    observer: PhaseObserver | None,
    idle_power: idle.IdleReading | None = None,
) -> PointResult:
    """Measure one point, add the observer's figures (and energy above idle), and emit its result."""
    outcome, child = group.run(p.context_len)
    measured = outcome if isinstance(outcome, Measured) else Measured(implementation=group.implementation)
    details, metrics = measured.record_details(), dict(measured.metrics)
    if isinstance(outcome, Measured) and observer is not None:
        report = observer.summarize(outcome.windows)
        metrics.update(report.metrics)
        details["observer"] = {"flags": report.flags, **report.details}
        if idle_power is not None and idle_power.power is not None:
            metrics["idle_power"] = idle_power.power
            metrics.update(idle.above_idle(report.details, idle_power.power))
        elif idle_power is not None and idle_power.absent is not None:
            details["idle_power"] = idle_power.absent
    if child:
        details["child_process"] = child
    details["wall_s"] = outcome.wall_s
    note = maxctx.index_limit_note(p.context_len, outcome.outcome, group.index_limit)
    if note:
        details["limit_note"] = note
    return run.result(
        point_id=p.label,
        model=p.model,
        family=family,
        context_len=p.context_len,
        precision=p.precision,
        logits=group.plan.logits,
        outcome=outcome.outcome,
        error=outcome.error if isinstance(outcome, Failure) else None,
        metrics=metrics,
        implementation=measured.implementation,
        details=details,
    )


def _profile(run: RunRecorder, group: _Group, family: str) -> None:
    """The model's operator profiles as results of this run, one per profiled length; when the
    profiling failed as a whole, each length's result is that failure (the run goes on)."""
    from ctxscope.agent.profiling.run import emit_profiled

    profiled = group.profile()
    if isinstance(profiled, Failure):
        profiled = [
            ProfiledLength(
                context_len=n,
                outcome=profiled.outcome,
                error=profiled.error,
                implementation=group.implementation,
                details={"kind": "profile"},
            )
            for n in group.plan.profile_lengths
        ]
    for length in profiled:
        emit_profiled(run, group.choice, family, group.plan.logits, length)


def _max_context(run: RunRecorder, plan: Plan, group: _Group, family: str) -> dict[str, maxctx.SearchResult]:
    """The model's max-context search, emitted as one result; returned under its point id."""
    settings = plan.max_context
    search = maxctx.SearchSettings(
        start=settings.start,
        max_tokens=settings.max_tokens,
        rel_tol=settings.rel_tol,
        step=settings.step,
        probe_timeout_s=settings.probe_timeout_s,
        memory_cap_bytes=int(plan.memory_cap) if plan.memory_cap is not None else None,
        logits=plan.logits,
        seed=plan.seed,
    )
    record, result = maxctx.record_search(run, group.choice, family, search)
    return {record.point_id: result}
