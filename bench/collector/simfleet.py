"""Simulated devices: contract records as an agent would send them, for the collector's tests and
benchmark. Values are synthetic (labelled `method="simulated"`), never presented as measurements."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctxscope.shared.ids import new_stream_id
from ctxscope.shared.messages import (
    DeviceMeta,
    Message,
    Metric,
    PointResult,
    RunFinished,
    RunProgress,
    RunStarted,
    Status,
    TelemetryBatch,
    TelemetryChannel,
)

SIMULATED = "simulated"
SCAN_SHARES = {
    "prefill": {
        "classes": {
            "ssm_scan": {"share_pct": 55.0},
            "gemm": {"share_pct": 40.0},
            "other": {"share_pct": 5.0},
        },
        "unclassified": [{"name": "simulated_kernel", "time_ms": 0.1, "count": 1}],
    }
}


@dataclass
class SimDevice:
    device: str
    stream: str = field(default_factory=new_stream_id)
    birth: int = 1
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    last_seq: int = 0  # the seq of the newest record made

    def envelope(self) -> dict[str, object]:
        self.last_seq = next(self._seq)
        return {"device": self.device, "stream": self.stream, "seq": self.last_seq, "ts": time.time_ns()}

    def meta(self, memory_bytes: int = 8 * 2**30) -> DeviceMeta:
        return DeviceMeta(
            **self.envelope(),
            birth=self.birth,
            agent_version="sim",
            hostname=f"{self.device}.sim",
            accelerators=[{"name": "simulated GPU", "memory_bytes": memory_bytes}],
            telemetry={SIMULATED: ["power_w", "temp_gpu_c"]},
            commands=["run_plan"],
        )

    def status(self, state: str = "online", run_id: str | None = None, **spool: int) -> Status:
        """`spool`: the status's `backlog` and `dropped`, where given."""
        return Status(**self.envelope(), state=state, birth=self.birth, run_id=run_id, **spool)

    def telemetry(
        self, power_w: float, temp_c: float, samples: int = 10, period_ms: float = 100.0
    ) -> TelemetryBatch:
        now = time.monotonic_ns()
        t = np.asarray([now - int((samples - 1 - i) * period_ms * 1e6) for i in range(samples)], dtype="<i8")
        return TelemetryBatch(
            **self.envelope(),
            source=SIMULATED,
            mono_to_wall_ns=time.time_ns() - now,
            t_ns=t.tobytes(),
            channels={
                "power_w": TelemetryChannel(
                    unit="W", dtype="f4", data=np.full(samples, power_w, "<f4").tobytes()
                ),
                "temp_gpu_c": TelemetryChannel(
                    unit="C", dtype="f4", data=np.full(samples, temp_c, "<f4").tobytes()
                ),
            },
        )

    def run_started(self, run_id: str, total: int) -> RunStarted:
        return RunStarted(
            **self.envelope(), run_id=run_id, plan={"simulated": True}, plan_hash="0" * 16, total_points=total
        )

    def progress(self, run_id: str, done: int, total: int, point: str | None = None) -> RunProgress:
        return RunProgress(**self.envelope(), run_id=run_id, done=done, total=total, point=point)

    def finished(self, run_id: str, ok: int, failed: int = 0) -> RunFinished:
        return RunFinished(
            **self.envelope(), run_id=run_id, outcome="completed", points_ok=ok, points_failed=failed
        )

    def result(
        self,
        run_id: str,
        model: str,
        family: str,
        context_len: int,
        ttft_ms: float,
        memory_mib: float | None = None,
        outcome: str = "ok",
        energy_per_token_j: float | None = None,
        operators: dict[str, Any] | None = None,
    ) -> PointResult:
        metrics: dict[str, Metric] = {}
        if outcome == "ok":
            # Five samples spread +-2% around the given median.
            spread = [ttft_ms * (1 + 0.01 * k) for k in (-2, -1, 0, 1, 2)]
            metrics["ttft"] = Metric(unit="ms", method=SIMULATED, samples=spread)
            metrics["decode_per_token"] = Metric(unit="ms", method=SIMULATED, samples=[ttft_ms / 100])
            if memory_mib is not None:
                metrics["memory_peak"] = Metric(unit="MiB", method=SIMULATED, samples=[memory_mib])
                metrics["memory_weights"] = Metric(
                    unit="B", method=SIMULATED, samples=[0.5 * memory_mib * 2**20]
                )
                metrics["memory_cache_analytic"] = Metric(
                    unit="B", method=SIMULATED, samples=[memory_mib * 2**19]
                )
            if energy_per_token_j is not None:
                metrics["prefill_energy_per_token"] = Metric(
                    unit="J/token", method=SIMULATED, samples=[energy_per_token_j]
                )
        return PointResult(
            **self.envelope(),
            run_id=run_id,
            point_id=f"{model}-{context_len}",
            model=model,
            family=family,
            context_len=context_len,
            precision="bf16",
            outcome=outcome,
            metrics=metrics,
            implementation={"runtime": SIMULATED},
            details={"operators": operators} if operators else {},
        )


def sweep(dev: SimDevice, run_id: str = "sim-run") -> list[Message]:
    """A complete small run: a Transformer and an SSM over four lengths (TTFTs cross at 12.5K)."""
    lengths = [1024, 4096, 16384, 65536]
    records: list[Message] = [dev.run_started(run_id, 2 * len(lengths))]
    done = 0
    for model, family, ttft, mem in (
        ("qwen2.5-0.5b", "transformer", lambda n: 0.01 * n + 1e-6 * n * n, lambda n: 1000 + 0.3 * n),
        ("mamba2-780m", "ssm", lambda n: 0.02 * n + 2e-7 * n * n, lambda n: 1500 + 0.05 * n),
    ):
        for n in lengths:
            operators = SCAN_SHARES if family == "ssm" and n == lengths[-1] else None
            records.append(
                dev.result(run_id, model, family, n, ttft(n), mem(n), "ok", ttft(n) / n, operators)
            )
            done += 1
            records.append(dev.progress(run_id, done, 2 * len(lengths), f"{model}@{n}"))
    records.append(dev.finished(run_id, done))
    return records
