"""Sweep plans: a TOML file (models x context lengths x precisions), validated and hashed.

The plan hash is the sha256 of the validated plan's canonical JSON (sorted keys, no spaces), so
two files that mean the same plan hash alike. Unknown keys are errors: a typo must not silently
fall back to a default. Values keep their TOML types (strict validation): `"32"` is no length and
`"no"` no false, where coercion once made `[true]` a 1-token context; a size such as `memory_cap =
"24GiB"` is text by design. A table whose settings are given but not its switch (`[max_context]`
without `enabled`, `[profile]` without `phases`) is refused: it would run nothing, silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator, model_validator

from ctxscope.agent.engine.limits import (
    MAX_CONTEXT_TOKENS,
    MAX_LIST_LEN,
    MAX_MEMORY_CAP,
    MAX_TIMEOUT_S,
    MIN_MEMORY_CAP,
)
from ctxscope.agent.engine.loop import LoopPolicy
from ctxscope.agent.engine.recorder import plan_hash
from ctxscope.compat import tomllib

Precision = Literal["bf16", "fp16", "fp32"]


class PlanError(ValueError):
    """A plan that cannot run, with a message meant for the user."""


class MaxContextPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = False
    start: int = Field(default=1024, ge=1, le=MAX_CONTEXT_TOKENS)
    max_tokens: int = Field(default=1_048_576, ge=1, le=MAX_CONTEXT_TOKENS)
    rel_tol: float = Field(default=0.01, gt=0, lt=1)
    step: int | None = Field(default=None, ge=1, le=MAX_CONTEXT_TOKENS)
    probe_timeout_s: float = Field(default=120.0, gt=0, le=MAX_TIMEOUT_S)


class ProfilePlan(BaseModel):
    """Operator profiles of each model after its points: shares of device time per operator class,
    with roofline figures, at each of `context_lengths` (default: the plan's)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    phases: list[Literal["prefill", "decode"]] = Field(default=[], max_length=2, description="empty: none")
    context_lengths: list[Annotated[int, Field(ge=1, le=MAX_CONTEXT_TOKENS)]] | None = Field(
        default=None, max_length=MAX_LIST_LEN
    )
    iterations: int = Field(default=1, ge=1, le=20, description="profiled passes per phase and length")


class Plan(BaseModel):
    """What to measure, and how hard to try."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1, max_length=64)
    models: list[Annotated[str, Field(max_length=128)]] = Field(min_length=1, max_length=MAX_LIST_LEN)
    context_lengths: list[int] = Field(min_length=1, max_length=MAX_LIST_LEN)
    precisions: list[Precision] = Field(default=["bf16"], min_length=1, max_length=3)
    logits: Literal["last", "all"] = "last"
    tiny: bool = Field(default=False, description="use the zoo's shrunk configs (CPU tests, smoke runs)")
    prefer_native: bool = True
    require_fast_kernels: bool = False
    attention: Literal["sdpa-gqa", "transformers-sdpa"] | None = Field(
        default=None,
        description="attention path: SDPA with native GQA on a calibrated backend, or transformers' "
        "default; unset, sdpa-gqa, and transformers-sdpa for the study's mode (logits='all')",
    )
    warmups: int = Field(default=2, ge=0, le=1000)
    min_reps: int = Field(default=5, ge=1, le=100_000)
    max_reps: int = Field(default=100, ge=1, le=100_000)
    min_time_s: float = Field(default=0.2, ge=0, le=MAX_TIMEOUT_S)
    max_time_s: float = Field(default=30.0, gt=0, le=MAX_TIMEOUT_S)
    stable_rel: float = Field(default=0.02, gt=0, lt=1)
    decode_tokens: int = Field(default=32, ge=0, le=MAX_CONTEXT_TOKENS, description="0 skips decode")
    decode: Literal["auto", "graph", "eager"] = Field(
        default="auto",
        description="auto: the fastest path (on a GPU, the compiled step in a CUDA graph; compiling costs"
        " seconds to a minute per point); graph: the uncompiled step in a CUDA graph; eager: one forward"
        " per token on transformers' default cache",
    )
    one_row_reductions: bool = Field(
        default=True,
        description="compile the decode step's one-row matrix products as reductions, and a Mamba-2"
        " mixer's depthwise convolution of few positions as a multiply-sum (decode=auto; on an H100 28%"
        " faster for Qwen2.5-0.5B at 32K); false keeps them cuBLAS GEMMs and aten convolutions, to compare"
        " on a new device. Each record names which",
    )
    combo_kernels: bool = Field(
        default=True,
        description="compile the decode step with inductor's combo kernels, independent kernels sharing"
        " launches (decode=auto; on an H100 11% faster for Falcon-H1-0.5B and 7% for Qwen2.5-0.5B at"
        " 32K); false launches each fused kernel alone. Each record names which",
    )
    dependent_launch: bool = Field(
        default=True,
        description="compile the decode step's Triton kernels with programmatic dependent launch where"
        " the GPU has it (compute capability 9.0+: each kernel starts while the one before it runs; on an"
        " H100 4% faster for Qwen2.5-0.5B at 16K; a native mamba_ssm model's step is timed with and"
        " without it and the faster kept, Mamba2-780m's being 2.5% slower with it); elsewhere, or false,"
        " each starts after the one before. Each record names which",
    )
    memory_cap: Annotated[ByteSize, Field(ge=MIN_MEMORY_CAP, le=MAX_MEMORY_CAP)] | None = Field(
        default=None, description="device memory the process may use, CUDA context included (e.g. '24GiB')"
    )
    point_timeout_s: float = Field(default=600.0, gt=0, le=MAX_TIMEOUT_S)
    isolate: Literal["always", "never", "auto"] = "auto"
    isolate_from: int = Field(
        default=16384,
        ge=1,
        le=MAX_CONTEXT_TOKENS,
        description="with isolate=auto: child processes from this length",
    )
    spread_processes: int = Field(
        default=3,
        ge=1,
        le=16,
        description="points at or below spread_below are measured in this many fresh processes "
        "(not with isolate='never'); their samples pool, the record carries the spread within and between",
    )
    spread_below: int = Field(default=16384, ge=0, le=2**24)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    max_context: MaxContextPlan = MaxContextPlan()
    profile: ProfilePlan = ProfilePlan()

    @field_validator("context_lengths")
    @classmethod
    def _positive_sorted(cls, lengths: list[int]) -> list[int]:
        if any(n < 1 for n in lengths):
            raise ValueError("context lengths must be >= 1")
        if any(n > MAX_CONTEXT_TOKENS for n in lengths):
            raise ValueError(f"context lengths must be <= {MAX_CONTEXT_TOKENS:,} tokens")
        return sorted(set(lengths))

    @field_validator("models", "precisions")
    @classmethod
    def _once_each(cls, names: list[str]) -> list[str]:
        """Each model and precision once, in the order given: as with context lengths, a repeat would
        measure the same points again under the same point ids."""
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        if self.max_reps < self.min_reps:
            raise ValueError(f"max_reps ({self.max_reps}) < min_reps ({self.min_reps})")
        if self.max_time_s < self.min_time_s:
            raise ValueError(
                f"max_time_s ({self.max_time_s}) < min_time_s ({self.min_time_s}): a point's timing stops at "
                "max_time_s; raise max_time_s or lower min_time_s"
            )
        if self.max_context.max_tokens < self.max_context.start:
            raise ValueError("max_context.max_tokens < max_context.start")
        _check_switched_on("max_context", self.max_context, "enabled", "add `enabled = true` to search")
        _check_switched_on("profile", self.profile, "phases", 'add `phases = ["prefill"]` (or "decode")')
        return self

    @property
    def profile_lengths(self) -> list[int]:
        """The lengths profiled per model and precision (none when no phase is asked for)."""
        if not self.profile.phases:
            return []
        return sorted(set(self.profile.context_lengths or self.context_lengths))

    def spread_over(self, length: int) -> int:
        """How many fresh processes measure a point of `length` tokens."""
        if self.isolate == "never" or length > self.spread_below:
            return 1
        return self.spread_processes

    @property
    def attention_mode(self) -> Literal["sdpa-gqa", "transformers-sdpa"]:
        if self.attention is not None:
            return self.attention
        return "transformers-sdpa" if self.logits == "all" else "sdpa-gqa"

    @property
    def policy(self) -> LoopPolicy:
        return LoopPolicy(
            warmups=self.warmups,
            min_reps=self.min_reps,
            max_reps=self.max_reps,
            min_time_s=self.min_time_s,
            max_time_s=self.max_time_s,
            stable_rel=self.stable_rel,
        )

    @property
    def hash(self) -> str:
        return plan_hash(self.model_dump(mode="json"))

    def isolated(self, context_len: int) -> bool:
        """Whether a point runs in a child process; a memory cap always needs one."""
        if self.memory_cap is not None and self.isolate != "never":
            return True
        return self.isolate == "always" or (self.isolate == "auto" and context_len >= self.isolate_from)

    def points(self) -> Iterator[PlanPoint]:
        """Points grouped by model and precision, lengths ascending (one model load per group)."""
        for model in self.models:
            for precision in self.precisions:
                for length in self.context_lengths:
                    yield PlanPoint(model, precision, length)


def _check_switched_on(name: str, table: BaseModel, switch: str, fix: str) -> None:
    """Refuse a table whose settings are given while its `switch` is not: the table would run nothing,
    silently. A switch written out, even off (`enabled = false`), is the plan's choice."""
    given = sorted(table.model_fields_set - {switch})
    if given and switch not in table.model_fields_set:
        raise ValueError(
            f"[{name}] sets {', '.join(given)} but not {switch}, so it runs nothing: {fix}, "
            "or remove the table"
        )


@dataclass(frozen=True)
class PlanPoint:
    model: str
    precision: str
    context_len: int

    @property
    def label(self) -> str:
        return f"{self.model}/{self.precision}/{self.context_len}"


def _known_models() -> list[str]:
    from ctxscope.agent import zoo

    return [spec.name for spec in zoo.list_models(include_unavailable=False)]


def validate(raw: dict[str, Any], *, known_models: list[str] | None = None) -> Plan:
    """Validate a plan dict; unknown models are reported with the list of valid names."""
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'plan'}: {err['msg']}" for err in exc.errors()
        )
        raise PlanError(f"invalid plan: {problems}") from exc
    names = known_models if known_models is not None else _known_models()
    unknown = [m for m in plan.models if m not in names]
    if unknown:
        raise PlanError(f"unknown model(s) {', '.join(unknown)}; valid names: {', '.join(names)}")
    return plan


def load(path: str | Path, *, known_models: list[str] | None = None) -> Plan:
    """Read and validate a TOML plan file; a file that cannot be read is a PlanError like a bad plan."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path}: not UTF-8 text (byte {exc.start}): a plan is a TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: not valid TOML: {exc}") from exc
    return validate(raw, known_models=known_models)


def index_limit_warnings(plan: Plan) -> list[str]:
    """Points longer than what mamba_ssm's SSD kernels can index (they will fault on a GPU that runs
    those kernels): one line per model, naming the limit and the lengths past it."""
    from ctxscope.agent import zoo

    warnings = []
    for model in plan.models:
        limit = zoo.ssd_int32_limit_tokens(zoo.spec_for(model, tiny=plan.tiny))
        past = [n for n in plan.context_lengths if limit is not None and n > limit]
        if past:
            warnings.append(
                f"{model}: {', '.join(map(str, past))} tokens lie past {limit}, the longest prompt "
                "mamba_ssm's SSD kernels can index with int32 offsets; on those kernels these points fault"
            )
    return warnings
