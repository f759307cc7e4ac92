"""Message schemas of the wire contract (pydantic v2), one discriminated union keyed on `kind`.

Every message carries the envelope: `kind`, `v` (schema version), `device`, `stream` (random id of
the sender's spool), `seq` (monotonic per stream, survives restarts) and `ts` (sender's wall clock,
ns since the Unix epoch). Unknown fields are ignored within a version, so a newer agent can add
fields without breaking an older collector. See docs/protocol.md for examples and QoS rules.
"""

from __future__ import annotations

import math
import statistics
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, field_validator, model_validator

from ctxscope.shared.ids import DEVICE_ID_PATTERN, STREAM_ID_PATTERN
from ctxscope.shared.topics import MAX_COLLECTOR_ID, Channel
from ctxscope.shared.version import SCHEMA_VERSION

DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN.pattern)]
StreamId = Annotated[str, Field(pattern=STREAM_ID_PATTERN.pattern)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]
NonNegativeInt = Annotated[int, Field(ge=0, le=2**63 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class _Model(BaseModel):
    # Binary fields (telemetry arrays) are msgpack bin on the wire; in JSON (exports, JSON-lines
    # output) they are base64, both ways.
    model_config = ConfigDict(extra="ignore", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")


class Envelope(_Model):
    v: Literal[1] = SCHEMA_VERSION
    device: DeviceId
    stream: StreamId
    seq: NonNegativeInt
    ts: NonNegativeInt = Field(description="sender's wall clock, ns since the Unix epoch")


# ---------------------------------------------------------------------------------------------
# Values with their method, unit and spread


class Metric(_Model):
    """A measured or derived quantity: raw samples, the unit, and how they were obtained.

    Raw samples travel so that every aggregation downstream recomputes medians and percentiles from
    values, never from averages of averages. Analytic quantities carry one sample.
    """

    unit: Annotated[str, Field(min_length=1, max_length=32)]
    method: Annotated[str, Field(min_length=1, max_length=512)]
    samples: Annotated[list[float], Field(min_length=1, max_length=100_000)]

    @field_validator("samples")
    @classmethod
    def _finite(cls, samples: list[float]) -> list[float]:
        if not all(math.isfinite(x) for x in samples):
            raise ValueError("samples must be finite numbers")
        return samples

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples, dtype=np.float64), q))

    @property
    def iqr(self) -> float:
        return self.percentile(75) - self.percentile(25)


# ---------------------------------------------------------------------------------------------
# Device state

# A birth counts the agent's connections (persisted in its spool): 2^31 is ~68 years of one
# reconnect per second. The bound refuses absurd births, such as 2^63-1 sent to pin a device
# offline; who may publish a device's state at all is the broker's ACL (docs/security.md).
MAX_BIRTH = 2**31 - 1
Birth = Annotated[int, Field(ge=0, le=MAX_BIRTH)]


class DeviceMeta(Envelope):
    """Birth message: who the device is and what it can measure. Retained on `meta`."""

    kind: Literal["meta"] = "meta"
    birth: Birth = Field(description="per-connection counter of the stream; a newer birth wins")
    agent_version: str
    hostname: str
    platform: dict[str, str] = Field(default_factory=dict)
    accelerators: list[dict[str, Any]] = Field(default_factory=list)
    telemetry: dict[str, list[str]] = Field(
        default_factory=dict, description="backend name -> metrics it supports on this device"
    )
    software: dict[str, str] = Field(default_factory=dict, description="package -> version")
    commands: list[str] = Field(default_factory=list, description="command names the agent accepts")


class Status(Envelope):
    """Liveness, retained on `status`; the last will is an `offline` status of the same birth."""

    kind: Literal["status"] = "status"
    state: Literal["online", "busy", "offline"]
    birth: Birth
    run_id: Identifier | None = None
    detail: str | None = None
    backlog: NonNegativeInt | None = Field(default=None, description="spooled records not yet acked")
    dropped: NonNegativeInt | None = Field(
        default=None, description="telemetry and log records the spool has dropped since it was made"
    )


# ---------------------------------------------------------------------------------------------
# Telemetry: columnar batches


class TelemetryChannel(_Model):
    """One channel of a batch: a packed little-endian float array, one value per timestamp."""

    unit: Annotated[str, Field(min_length=1, max_length=32)]
    dtype: Literal["f4", "f8"]
    data: bytes

    def values(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=np.dtype(f"<{self.dtype}"))

    @property
    def length(self) -> int:
        return len(self.data) // (4 if self.dtype == "f4" else 8)

    @model_validator(mode="after")
    def _whole_items(self) -> TelemetryChannel:
        if len(self.data) % (4 if self.dtype == "f4" else 8):
            raise ValueError(f"channel data of {len(self.data)} bytes is not a whole {self.dtype} array")
        return self


class TelemetryBatch(Envelope):
    """Samples of one telemetry backend. `t_ns` is a packed little-endian int64 array of
    monotonic-clock timestamps (the clock the engine's phase markers use); `mono_to_wall_ns` maps
    them to wall time. A metric the backend does not support is absent, never zero-filled."""

    kind: Literal["telemetry"] = "telemetry"
    source: Identifier
    clock: Literal["monotonic"] = "monotonic"
    mono_to_wall_ns: Int64
    t_ns: bytes
    channels: dict[Identifier, TelemetryChannel]

    def timestamps(self) -> np.ndarray:
        return np.frombuffer(self.t_ns, dtype=np.dtype("<i8"))

    @model_validator(mode="after")
    def _aligned(self) -> TelemetryBatch:
        if len(self.t_ns) % 8:
            raise ValueError("t_ns is not a whole int64 array")
        n = len(self.t_ns) // 8
        for name, channel in self.channels.items():
            if channel.length != n:
                raise ValueError(f"channel {name!r} has {channel.length} values for {n} timestamps")
        return self


# ---------------------------------------------------------------------------------------------
# Runs and results


class RunStarted(Envelope):
    kind: Literal["run_started"] = "run_started"
    run_id: Identifier
    plan: dict[str, Any]
    plan_hash: Annotated[str, Field(min_length=8, max_length=128)]
    total_points: NonNegativeInt
    manifest: dict[str, Any] = Field(default_factory=dict)


class RunProgress(Envelope):
    kind: Literal["run_progress"] = "run_progress"
    run_id: Identifier
    done: NonNegativeInt
    total: NonNegativeInt
    point: str | None = Field(default=None, description="label of the point now running")


class RunFinished(Envelope):
    kind: Literal["run_finished"] = "run_finished"
    run_id: Identifier
    outcome: Literal["completed", "failed", "cancelled"]
    points_ok: NonNegativeInt
    points_failed: NonNegativeInt
    error: str | None = None


Outcome = Literal["ok", "oom", "fault", "timeout", "skipped"]


# The family of `agent calibrate`'s results: one figure per kernel-family microbenchmark, read by the
# collector's prediction. They are not characterization points (their "model" names a benchmark and
# their context length its size), so no characterization view pools them with measured models.
CALIBRATION_FAMILY = "calibration"


class PointResult(Envelope):
    """One measured point: a model at one context length and precision, with its outcome.

    `metrics` holds every measured quantity with unit, method and raw samples (e.g. `ttft`,
    `decode_per_token`, `peak_memory`); a quantity that was not measured is absent.
    `implementation` records which code path ran for each hot operation (kernel paths, attention
    backend, decode path). `details` carries structured extras such as operator shares, roofline
    figures, energy windows and throttle flags.
    """

    kind: Literal["result"] = "result"
    run_id: Identifier
    point_id: Identifier
    model: Identifier
    family: Identifier
    context_len: Annotated[int, Field(ge=1, le=2**63 - 1)]
    precision: Identifier
    logits: Literal["last", "all"] = "last"
    outcome: Outcome
    error: str | None = None
    metrics: dict[Identifier, Metric] = Field(default_factory=dict)
    implementation: dict[str, str] = Field(default_factory=dict)
    manifest: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class Log(Envelope):
    kind: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error"]
    logger: str = "ctxscope"
    message: Annotated[str, Field(max_length=16_384)]


# ---------------------------------------------------------------------------------------------
# Commands (collector -> agent) and their acknowledgements


# The longest a command may stay valid: agents refuse one whose expires_at lies further ahead.
MAX_COMMAND_TTL_S = 3600.0


class Command(Envelope):
    """A command for the device in `device`, sent on `cmd/<name>`; never retained, and ignored by
    the agent once `expires_at` (wall clock, ns) has passed."""

    kind: Literal["command"] = "command"
    command_id: Identifier
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    args: dict[str, Any] = Field(default_factory=dict)
    expires_at: NonNegativeInt


class CommandAck(Envelope):
    kind: Literal["command_ack"] = "command_ack"
    command_id: Identifier
    name: str
    accepted: bool
    reason: str | None = None
    run_id: Identifier | None = None


Message = Annotated[
    DeviceMeta
    | Status
    | TelemetryBatch
    | RunStarted
    | RunProgress
    | RunFinished
    | PointResult
    | Log
    | Command
    | CommandAck,
    Field(discriminator="kind"),
]
MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


class CollectorPresence(_Model):
    """A collector's presence, retained on its presence topic (not a device's record: no envelope).
    It announces itself online when it has subscribed; its last will, and its clean stop, say
    offline. An agent holds its records in its spool while every collector it knows of is offline."""

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["collector_presence"] = "collector_presence"
    collector: Annotated[str, Field(min_length=1, max_length=MAX_COLLECTOR_ID)]
    online: StrictBool
    ts: NonNegativeInt = Field(description="the collector's wall clock, ns since the Unix epoch")


PRESENCE_ADAPTER: TypeAdapter[CollectorPresence] = TypeAdapter(CollectorPresence)

CHANNEL_OF_KIND: dict[str, Channel] = {
    "meta": Channel.META,
    "status": Channel.STATUS,
    "telemetry": Channel.TELEMETRY,
    "run_started": Channel.RUN,
    "run_progress": Channel.RUN,
    "run_finished": Channel.RUN,
    "command_ack": Channel.RUN,
    "result": Channel.RESULT,
    "log": Channel.LOG,
    "command": Channel.CMD,
}

# Kinds that are state (retained, latest wins) rather than records of the stream: their `seq` is
# the stream's high-water mark when they were sent, and the collector does not dedup them by seq.
STATE_KINDS = frozenset({"meta", "status"})
# Records that the agent's spool may drop, oldest first, when it is full. Results never are.
DROPPABLE_KINDS = frozenset({"telemetry", "log"})
