"""What a job ended with, in this process or in a worker: typed outcomes that cross the process boundary.

Every successful job has its own outcome (`Loaded`, `Measured`, `Probed`, `Profiled`), named by the
job's `op`; any job may end as a `Failure` (oom, fault, timeout) with its reason. A measured point
carries its timed loops with their phase windows as `PhaseWindow` objects, for the telemetry
observer; the record's JSON form of a loop is made from them only when the result is emitted.
`wall_s` is set by the parent: the job's wall time as it saw it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ctxscope.agent.phases import PhaseWindow
from ctxscope.shared.messages import Metric, Outcome

Phase = Literal["prefill", "decode"]
# the record's detail key of each phase's loop (the prefill loop times TTFT)
LOOP_KEYS: dict[Phase, str] = {"prefill": "ttft_loop", "decode": "decode_loop"}


class _Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wall_s: float = 0.0


class Failure(_Outcome):
    """A job that did not finish: out of memory, a fault (an error, a dead child, a malformed reply) or
    no reply in time."""

    outcome: Literal["oom", "fault", "timeout"]
    error: str


class PhaseLoop(BaseModel):
    """One timed loop of a point: why it stopped, runs per repetition, and one window per repetition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: Phase
    stop_reason: str
    inner: int = Field(ge=1)
    windows: list[PhaseWindow]

    def details(self) -> dict[str, Any]:
        """The loop as a result record's details carry it."""
        return {"stop_reason": self.stop_reason, "inner": self.inner, "windows": self._window_dicts()}

    def _window_dicts(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in asdict(w).items() if k != "name"} for w in self.windows]


class Loaded(_Outcome):
    op: Literal["load"] = "load"
    outcome: Literal["ok"] = "ok"
    load_s: float
    cap: dict[str, int | float | str] = Field(
        default_factory=dict, description="the memory cap applied, if any (`devicemem.apply_process_cap`)"
    )
    implementation: dict[str, str] = Field(default_factory=dict)


class Measured(_Outcome):
    """One point measured: metrics, implementation, details and its timed loops."""

    op: Literal["point"] = "point"
    outcome: Literal["ok"] = "ok"
    metrics: dict[str, Metric] = Field(default_factory=dict)
    implementation: dict[str, str] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    loops: list[PhaseLoop] = Field(default_factory=list)

    @property
    def windows(self) -> list[PhaseWindow]:
        return [w for loop in self.loops for w in loop.windows]

    def record_details(self) -> dict[str, Any]:
        """The details of the point's result record: the point's own, with each loop under its key."""
        return {**self.details, **{LOOP_KEYS[loop.phase]: loop.details() for loop in self.loops}}


class Probed(_Outcome):
    """One untimed prefill at a length (a max-context probe) and its memory."""

    op: Literal["probe"] = "probe"
    outcome: Literal["ok"] = "ok"
    duration_s: float
    peak_bytes: int | None = None
    cache_bytes: int | None = None
    logits_bytes: int | None = None
    weights_bytes: int | None = None
    allocator_reserved_bytes: int | None = None
    outside_allocator_bytes: int | None = None
    outside_allocator_method: str | None = None


class ProfiledLength(BaseModel):
    """One length's operator profile: a result record's body, without what the run adds (run id,
    point id, model names and manifest)."""

    model_config = ConfigDict(extra="forbid")

    context_len: int = Field(ge=1)
    outcome: Outcome
    error: str | None = None
    metrics: dict[str, Metric] = Field(default_factory=dict)
    implementation: dict[str, str] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class Profiled(_Outcome):
    op: Literal["profile"] = "profile"
    outcome: Literal["ok"] = "ok"
    results: list[ProfiledLength]
