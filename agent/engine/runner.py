"""Runs a plan: every point measured (in this process or a child), every record through the sink.

Records, in order: RunStarted (plan, hash, manifest), then per point a RunProgress and a
PointResult, then per model and precision a max-context PointResult when the plan asks for the
search, and RunFinished. A point that fails (oom, fault, timeout) is recorded and the sweep goes
on; a worker that died or hung is replaced for the next point.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from ctxscope.agent import zoo
from ctxscope.agent.engine import idle, maxctx, point, spread
from ctxscope.agent.engine.isolation import HostMemoryWatch, Worker, is_unified_memory_device
from ctxscope.agent.engine.manifest import collect
from ctxscope.agent.engine.plan import Plan, PlanPoint
from ctxscope.agent.phases import PhaseObserver, PhaseWindow
from ctxscope.agent.records import RecordSink
from ctxscope.shared.messages import Metric, PointResult, RunFinished, RunProgress, RunStarted


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

    def settings(self, length: int) -> point.PointSettings:
        return point.PointSettings(
            context_len=length,
            logits=self.plan.logits,
            decode_tokens=self.plan.decode_tokens,
            decode=self.plan.decode,
            policy=self.plan.policy,
            seed=self.plan.seed,
            min_window_ns=self.min_window_ns,
        )

    def run(self, length: int) -> dict[str, Any]:
        processes = self.plan.spread_over(length)
        if processes > 1:
            return self._spread(length, processes)
        if self.plan.isolated(length):
            return self._isolated(length)
        return self._in_process(length)

    def _spread(self, length: int, processes: int) -> dict[str, Any]:
        """The point measured in `processes` fresh worker processes, pooled (spread.pool)."""
        replies = []
        for _ in range(processes):
            if self.worker is not None:  # a fresh process each time: load, calibration, caches anew
                self.worker.close()
                self.worker = None
            reply = self._isolated(length)
            if reply["outcome"] != "ok":
                return reply
            replies.append(reply)
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        return spread.pool(replies)

    def _in_process(self, length: int) -> dict[str, Any]:
        started = time.monotonic()
        try:
            if self.session is None:
                self.session = point.Session(self.choice)
            outcome, _ = point.measure_point(self.session, self.settings(length))
        except Exception as exc:  # recorded as the point's outcome; the sweep goes on
            kind = point.classify(exc)
            if self.session is not None:
                point.free(self.session.device)
            return {"outcome": kind, "error": point.error_text(exc), "wall_s": time.monotonic() - started}
        return {
            "outcome": outcome.outcome,
            "metrics": outcome.metrics,
            "implementation": outcome.implementation,
            "details": outcome.details,
            "wall_s": time.monotonic() - started,
        }

    def _loaded_worker(self) -> tuple[Worker | None, dict[str, Any]]:
        """The worker with the model loaded (started and loaded when needed), or None and the failed
        load's reply."""
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
            loaded = self.worker.request(
                {"op": "load", "choice": asdict(self.choice), "memory_cap_bytes": cap},
                self.plan.point_timeout_s,
            )
            if loaded["outcome"] != "ok":
                self.worker.close()
                self.worker = None
                return None, loaded
            self.child = {"load_s": loaded["load_s"], **loaded["cap"]}
        return self.worker, {}

    def profile(self) -> dict[str, Any]:
        """Operator profiles at the plan's profile lengths: {"outcome", "results": [fields...]}, in a
        worker unless the plan says isolate = "never"."""
        plan = self.plan
        lengths, phases = plan.profile_lengths, list(plan.profile.phases)
        if plan.isolate == "never":
            from ctxscope.agent.profiling.run import plan_profile_fields

            try:
                if self.session is None:
                    self.session = point.Session(self.choice)
                fields = plan_profile_fields(
                    self.session, phases, lengths, plan.logits, plan.profile.iterations
                )
            except Exception as exc:  # recorded; the run goes on
                return {"outcome": point.classify(exc), "error": point.error_text(exc)}
            return {"outcome": "ok", "results": fields}
        worker, failed = self._loaded_worker()
        if worker is None:
            return failed
        job = {"op": "profile", "phases": phases, "lengths": lengths, "logits": plan.logits,
               "iterations": plan.profile.iterations}  # fmt: skip
        return worker.request(job, plan.point_timeout_s * len(lengths) * len(phases))

    def _isolated(self, length: int) -> dict[str, Any]:
        worker, failed = self._loaded_worker()
        if worker is None:
            return failed
        settings = self.settings(length)
        job = {"op": "point", "settings": {**asdict(settings), "policy": asdict(settings.policy)}}
        reply = worker.request(job, self.plan.point_timeout_s)
        if "metrics" in reply:
            reply["metrics"] = {k: Metric.model_validate(v) for k, v in reply["metrics"].items()}
        reply["details"] = {**(reply.get("details") or {}), "child_process": self.child}
        return reply

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.session is not None:
            device = self.session.device
            self.session = None
            point.free(device)


def _windows(details: dict[str, Any]) -> list[PhaseWindow]:
    windows = []
    for phase in ("ttft", "decode"):
        loop = details.get(f"{phase}_loop")
        if loop:
            name = "prefill" if phase == "ttft" else "decode"
            windows += [
                PhaseWindow(name, w["start_ns"], w["end_ns"], w["tokens"], w["repetitions"])
                for w in loop["windows"]
            ]
    return windows


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
    ) as bar:
        bar.add_task("sweep", total=total)
        yield bar


def new_run_id() -> str:
    """A run id that sorts by start time and is unique enough across a fleet: run-<UTC time>-<hex>."""
    return f"run-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


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
    run_id = run_id or new_run_id()
    manifest = collect(device, plan_hash=plan.hash)
    points = list(plan.points())
    groups: dict[tuple[str, str], list[PlanPoint]] = {}
    for p in points:
        groups.setdefault((p.model, p.precision), []).append(p)
    # every result counts: the measured points and each model's profiled lengths
    total = len(points) + len(groups) * len(plan.profile_lengths)
    summary = RunSummary(run_id, plan.hash)
    sink.emit(
        RunStarted,
        run_id=run_id,
        plan=plan.model_dump(mode="json"),
        plan_hash=plan.hash,
        total_points=total,
        manifest=manifest,
    )
    min_window_ns = observer.min_window_ns if observer is not None else 0
    idle_power = idle.measure_idle(observer) if observer is not None else None  # before any work
    done = 0
    outcome: Literal["completed", "cancelled"] = "completed"
    try:
        with _progress(progress, total) as bar:
            for (model, precision), members in groups.items():
                if should_stop():
                    outcome = "cancelled"
                    break
                family = zoo.get_spec(model).family
                choice = point.ModelChoice(
                    name=model,
                    precision=precision,
                    device=device,
                    tiny=plan.tiny,
                    prefer_native=plan.prefer_native,
                    require_fast_kernels=plan.require_fast_kernels,
                    attention=plan.attention_mode,
                )
                group = _Group(plan, choice, min_window_ns)
                try:
                    for p in members:
                        if should_stop():
                            outcome = "cancelled"
                            break
                        sink.emit(RunProgress, run_id=run_id, done=done, total=total, point=p.label)
                        if bar is not None:
                            bar.update(bar.task_ids[0], description=p.label)
                        summary.results.append(
                            _measure_and_emit(
                                plan, group, p, family, run_id, manifest, sink, observer, idle_power
                            )
                        )
                        if summary.results[-1].outcome == "ok":
                            summary.points_ok += 1
                        else:
                            summary.points_failed += 1
                        done += 1
                        if bar is not None:
                            bar.advance(bar.task_ids[0])
                    if outcome != "cancelled" and plan.profile_lengths:
                        label = f"{model}/{precision}/profile"
                        sink.emit(RunProgress, run_id=run_id, done=done, total=total, point=label)
                        _profile(group, family, run_id, manifest, sink, summary)
                        done += len(plan.profile_lengths)
                        if bar is not None:
                            bar.advance(bar.task_ids[0], len(plan.profile_lengths))
                finally:
                    group.close()
                if outcome == "cancelled":
                    break
                if plan.max_context.enabled:
                    _max_context(plan, group, family, run_id, manifest, sink, summary)
    except Exception as exc:
        sink.emit(
            RunFinished,
            run_id=run_id,
            outcome="failed",
            points_ok=summary.points_ok,
            points_failed=summary.points_failed,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    sink.emit(
        RunFinished,
        run_id=run_id,
        outcome=outcome,
        points_ok=summary.points_ok,
        points_failed=summary.points_failed,
    )
    return summary


def _measure_and_emit(
    plan: Plan,
    group: _Group,
    p: PlanPoint,
    family: str,
    run_id: str,
    manifest: dict[str, Any],
    sink: RecordSink,
    observer: PhaseObserver | None,
    idle_power: Metric | None = None,
) -> PointResult:
    """Measure one point, add the observer's figures (and energy above idle), and emit its result."""
    reply = group.run(p.context_len)
    details = dict(reply.get("details") or {})
    details["wall_s"] = reply.get("wall_s")
    metrics = dict(reply.get("metrics") or {})
    if observer is not None and reply["outcome"] == "ok":
        report = observer.summarize(_windows(details))
        metrics.update(report.metrics)
        details["observer"] = {"flags": report.flags, **report.details}
        if idle_power is not None:
            metrics["idle_power"] = idle_power
            metrics.update(idle.above_idle(report.details, idle_power))
    note = maxctx.index_limit_note(p.context_len, reply["outcome"], group.index_limit)
    if note:
        details["limit_note"] = note
    return sink.emit(
        PointResult,
        run_id=run_id,
        point_id=p.label,
        model=p.model,
        family=family,
        context_len=p.context_len,
        precision=p.precision,
        logits=plan.logits,
        outcome=reply["outcome"],
        error=reply.get("error"),
        metrics=metrics,
        implementation=reply.get("implementation") or {},
        manifest={**manifest, "precision": p.precision},
        details=details,
    )


def _profile(
    group: _Group,
    family: str,
    run_id: str,
    manifest: dict[str, Any],
    sink: RecordSink,
    summary: RunSummary,
) -> None:
    """The model's operator profiles as results of this run, one per profiled length; when the
    profiling failed as a whole, each length's result is that failure (the run goes on)."""
    choice = group.choice
    reply = group.profile()
    records = reply.get("results") if reply["outcome"] == "ok" else None
    if records is None:
        failure = {"family": family, "precision": choice.precision, "logits": group.plan.logits}
        failure |= {"outcome": reply["outcome"], "error": reply.get("error"), "details": {"kind": "profile"}}
        records = [{**failure, "context_len": length} for length in group.plan.profile_lengths]
    for fields in records:
        # named as the plan names the model (a tiny plan's records carry the real name, see shrunk)
        label = f"{choice.name}/{choice.precision}/{fields['context_len']}/profile"
        fields |= {"run_id": run_id, "point_id": label, "model": choice.name}
        result = sink.emit(PointResult, **fields, manifest={**manifest, "precision": choice.precision})
        if result.outcome == "ok":
            summary.points_ok += 1
        else:
            summary.points_failed += 1


def _max_context(
    plan: Plan,
    group: _Group,
    family: str,
    run_id: str,
    manifest: dict[str, Any],
    sink: RecordSink,
    summary: RunSummary,
) -> None:
    settings = plan.max_context
    choice = group.choice
    cap = int(plan.memory_cap) if plan.memory_cap is not None else None
    probe = maxctx.isolated_probe(
        choice, logits=plan.logits, memory_cap_bytes=cap, timeout_s=settings.probe_timeout_s, seed=plan.seed
    )
    result = maxctx.search(
        probe,
        start=settings.start,
        max_tokens=settings.max_tokens,
        rel_tol=settings.rel_tol,
        step=settings.step,
    )
    label = f"{choice.name}/{choice.precision}/max-context"
    summary.max_context[label] = result
    note = maxctx.index_limit_note(result.smallest_failing, result.failing_outcome, group.index_limit)
    length = result.largest_ok or result.smallest_failing or settings.start
    metrics = {}
    if result.largest_ok is not None:
        tolerance = f"{settings.step} tokens" if settings.step else f"{settings.rel_tol:.1%}"
        # a search stopped by max_tokens found no limit: its figure is a lower bound
        bound = f"; lower bound, {result.bounded_by}" if result.bounded_by else ""
        metrics["max_context"] = Metric(
            unit="tokens",
            method=f"grow x2 from {settings.start}, bisect to {tolerance}; each probe one prefill "
            f"(logits={plan.logits}) in a fresh child process; cap={cap} B{bound}",
            samples=[float(result.largest_ok)],
        )
    sink.emit(
        PointResult,
        run_id=run_id,
        point_id=label,
        model=choice.name,
        family=family,
        context_len=length,
        precision=choice.precision,
        logits=plan.logits,
        outcome="ok" if result.largest_ok is not None else (result.failing_outcome or "fault"),
        metrics=metrics,
        manifest={**manifest, "precision": choice.precision},
        details={
            "kind": "max_context",
            "memory_cap_bytes": cap,
            "search": result.to_dict(),
            "ssd_int32_limit_tokens": group.index_limit,
            **({"limit_note": note} if note else {}),
        },
    )
