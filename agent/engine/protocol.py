"""The worker protocol: typed jobs to the child, typed outcomes back, validated on both sides.

One JSON job per line on the child's stdin; one JSON outcome per job on its stdout, on a line that
starts with `REPLY_MARK` (libraries may print other lines). A line that does not parse as the
outcome the parent expects, or a job the child cannot read, is a `MalformedReply` or a ValueError
with the reason, which each side turns into a `fault` outcome: a malformed message crashes neither.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ctxscope.agent.engine.outcome import Failure, Loaded, Measured, Probed, Profiled
from ctxscope.agent.engine.point import ModelChoice, PointSettings

REPLY_MARK = "@@ctxscope-engine@@ "
_REASON_CHARS = 1000

R = TypeVar("R", Loaded, Measured, Probed, Profiled)


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoadJob(_Job):
    """Load the model (first job of every worker), under an optional memory cap."""

    op: Literal["load"] = "load"
    choice: ModelChoice
    memory_cap_bytes: int | None = None


class PointJob(_Job):
    op: Literal["point"] = "point"
    settings: PointSettings


class ProbeJob(_Job):
    """One untimed prefill of `context_len` random tokens (a max-context probe)."""

    op: Literal["probe"] = "probe"
    context_len: int = Field(ge=1)
    logits: Literal["last", "all"]
    seed: int = 0


class ProfileJob(_Job):
    op: Literal["profile"] = "profile"
    phases: list[Literal["prefill", "decode"]]
    lengths: list[Annotated[int, Field(ge=1)]]
    logits: Literal["last", "all"]
    iterations: int = Field(ge=1)


Job = Annotated[LoadJob | PointJob | ProbeJob | ProfileJob, Field(discriminator="op")]
JOB_ADAPTER: TypeAdapter[Job] = TypeAdapter(Job)


def _reason(exc: ValidationError | ValueError) -> str:
    if isinstance(exc, ValidationError):
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors())
    else:
        text = str(exc)
    return text[:_REASON_CHARS]


def read_job(line: str) -> Job:
    """The job on one stdin line; raises ValueError with the reason when it is not one."""
    try:
        return JOB_ADAPTER.validate_json(line)
    except ValidationError as exc:
        raise ValueError(f"malformed job: {_reason(exc)}") from None


class MalformedReply(ValueError):
    """A reply that is neither the expected outcome nor a failure."""


def read_reply(payload: str, expected: type[R]) -> R | Failure:
    """The child's outcome of a job whose success is `expected`; raises MalformedReply with the reason
    when the payload is neither that nor a Failure."""
    try:
        return Failure.model_validate_json(payload)
    except ValueError:
        pass
    try:
        return expected.model_validate_json(payload)
    except ValueError as exc:
        raise MalformedReply(f"malformed reply from the worker: {_reason(exc)}") from None
