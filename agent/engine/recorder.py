"""The framing of every run the agent records (`agent run`, `profile`, `maxctx`, `calibrate`, a plan
from the collector): one run id, a RunStarted with the plan, its hash and the manifest, RunProgress
before each step, the results (each with the run's id and manifest), and a RunFinished with the
counts. A run that breaks on an unexpected error still ends with a `failed` RunFinished. At a
terminal the same steps show on a progress bar on stderr.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from types import TracebackType
from typing import Any, Literal

from ctxscope.agent.records import RecordSink
from ctxscope.shared.messages import PointResult, RunFinished, RunProgress, RunStarted


def new_run_id() -> str:
    """A run id that sorts by start time and is unique enough across a fleet: run-<UTC time>-<hex>."""
    return f"run-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def plan_hash(plan: dict[str, Any]) -> str:
    """The sha256 of the plan's canonical JSON (sorted keys, no spaces): equal plans hash alike."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def counts_as_failed(outcome: str) -> bool:
    """Whether a result failed (oom, fault, timeout): `skipped` (not measurable here) is neither ok nor
    failed. The rule of a run's `points_failed`, and of a command's exit status 1."""
    return outcome not in ("ok", "skipped")


class RunRecorder:
    """One run's records through `sink`: a context manager that starts the run on entry and finishes it
    on exit (`completed`, `cancelled` after `cancel()`, or `failed` with the error that ended it).

    `total` counts the results the run is expected to emit; each result counts as ok, as failed (oom,
    fault, timeout), or, skipped (not measurable here), as neither.
    The manifest is that of `torch_device`, with `manifest_extra` added; each result carries it
    with its own precision. With `progress_bar`, each step and result also shows on stderr.
    """

    def __init__(
        self,
        sink: RecordSink,
        *,
        plan: dict[str, Any],
        total: int,
        torch_device: str,
        precision: str | None = None,
        manifest_extra: dict[str, Any] | None = None,
        run_id: str | None = None,
        progress_bar: bool = False,
    ) -> None:
        from ctxscope.agent.engine.manifest import collect

        self.sink = sink
        self.plan = plan
        self.plan_hash = plan_hash(plan)
        self.run_id = run_id or new_run_id()
        self.total = total
        self.manifest = collect(torch_device, plan_hash=self.plan_hash, precision=precision)
        self.manifest.update(manifest_extra or {})
        self.done = 0
        self.points_ok = 0
        self.points_failed = 0
        self.results: list[PointResult] = []
        self._outcome: Literal["completed", "cancelled"] = "completed"
        self._bar = _ProgressBar(total) if progress_bar else None

    def __enter__(self) -> RunRecorder:
        self.sink.emit(
            RunStarted,
            run_id=self.run_id,
            plan=self.plan,
            plan_hash=self.plan_hash,
            total_points=self.total,
            manifest=self.manifest,
        )
        if self._bar is not None:
            self._bar.start()
        return self

    def progress(self, label: str) -> None:
        """Say which step runs now (`done` of `total` results are in)."""
        self.sink.emit(RunProgress, run_id=self.run_id, done=self.done, total=self.total, point=label)
        if self._bar is not None:
            self._bar.show(self.done, label)

    def result(self, **fields: Any) -> PointResult:
        """Emit one result of this run (its fields without the run id and manifest) and count it."""
        manifest = {**self.manifest, "precision": fields["precision"]}
        result = self.sink.emit(PointResult, run_id=self.run_id, manifest=manifest, **fields)
        self.results.append(result)
        self.done += 1
        if result.outcome == "ok":
            self.points_ok += 1
        elif counts_as_failed(result.outcome):
            self.points_failed += 1
        if self._bar is not None:
            self._bar.show(self.done)
        return result

    def cancel(self) -> None:
        """The run stops early: it finishes as `cancelled`."""
        self._outcome = "cancelled"

    @property
    def cancelled(self) -> bool:
        return self._outcome == "cancelled"

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        counts = {"points_ok": self.points_ok, "points_failed": self.points_failed}
        if exc is None:
            self.sink.emit(RunFinished, run_id=self.run_id, outcome=self._outcome, **counts)
        elif isinstance(exc, Exception):
            error = f"{type(exc).__name__}: {exc}"
            self.sink.emit(RunFinished, run_id=self.run_id, outcome="failed", error=error, **counts)


class _ProgressBar:
    """The run's steps on stderr: the step in hand, results in of the total, time elapsed."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
        )
        self._task = self._progress.add_task("starting", total=total)

    def start(self) -> None:
        self._progress.start()

    def show(self, done: int, label: str | None = None) -> None:
        if label is None:
            self._progress.update(self._task, completed=done)
        else:
            self._progress.update(self._task, completed=done, description=label)

    def stop(self) -> None:
        self._progress.stop()
