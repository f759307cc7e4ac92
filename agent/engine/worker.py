"""The child process that runs points and probes: `python -m ctxscope.agent.engine.worker`.

Protocol: one JSON job per line on stdin, one JSON reply per job on stdout on a line that starts
with `REPLY_MARK` (libraries may print other lines). The first job loads the model; later jobs
measure points, probe one context length, or profile the model's operators at given lengths. After
a fault (anything but out-of-memory) the worker replies and exits, since a CUDA error may have
poisoned its context. Keep this module's imports
light: the parent's rich/pydantic stack is not needed here beyond the Metric schema.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

REPLY_MARK = "@@ctxscope-engine@@ "


def _reply(payload: dict[str, Any], stream: Any) -> None:
    stream.write(REPLY_MARK + json.dumps(payload) + "\n")
    stream.flush()


def _apply_memory_cap(device: str, cap_bytes: int | None) -> dict[str, Any]:
    """The cap counts the process's whole device memory (`devicemem`), as a smaller card would."""
    import torch

    from ctxscope.agent.engine import devicemem

    if cap_bytes is None or not device.startswith("cuda"):
        return {}
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index  # the calls need an index
    return devicemem.apply_process_cap(index, cap_bytes)


def _outside_allocator(device: Any) -> dict[str, Any]:
    """What the process held outside PyTorch's allocator after a probe (CUDA context, libraries)."""
    if device.type != "cuda":
        return {}
    from ctxscope.agent.engine import devicemem

    outside = devicemem.outside_allocator(device.index if device.index is not None else 0)
    return {"outside_allocator_bytes": outside.bytes, "outside_allocator_method": outside.method}


def _settings(raw: dict[str, Any]) -> Any:
    from ctxscope.agent.engine.loop import LoopPolicy
    from ctxscope.agent.engine.point import PointSettings

    return PointSettings(**{**raw, "policy": LoopPolicy(**raw["policy"])})


def handle(job: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Run one job; exceptions propagate to the caller, which classifies them."""
    import torch

    from ctxscope.agent.engine import forward, point

    op = job["op"]
    if op == "load":
        _apply_memory_cap(job["choice"]["device"], job.get("memory_cap_bytes"))
        session = point.Session(point.ModelChoice(**job["choice"]))
        state["session"] = session
        # measured again now that the model ran once at load time: kernel images load lazily
        cap = _apply_memory_cap(job["choice"]["device"], job.get("memory_cap_bytes"))
        return {
            "outcome": "ok",
            "load_s": session.load_s,
            "cap": cap,
            "implementation": session.implementation(),
        }
    session = state["session"]
    if op == "point":
        outcome, _ = point.measure_point(session, _settings(job["settings"]))
        return {
            "outcome": outcome.outcome,
            "metrics": {k: m.model_dump() for k, m in outcome.metrics.items()},
            "implementation": outcome.implementation,
            "details": outcome.details,
        }
    if op == "probe":
        length = int(job["context_len"])
        ids = forward.synthetic_prompt(
            session.vocab_size, length, seed=job.get("seed", 0), device=session.device
        )
        started = time.perf_counter()
        with torch.inference_mode():
            split = point.prefill_memory(session, ids, job["logits"])
        return {
            "outcome": "ok",
            "duration_s": time.perf_counter() - started,
            "peak_bytes": split.peak_bytes,
            "cache_bytes": split.cache_bytes,
            "logits_bytes": split.logits_bytes,
            "weights_bytes": split.weights_bytes,
            "allocator_reserved_bytes": torch.cuda.max_memory_reserved()
            if session.device.type == "cuda"
            else None,
            **_outside_allocator(session.device),
        }
    if op == "profile":
        from ctxscope.agent.profiling.run import plan_profile_fields

        fields = plan_profile_fields(
            session, job["phases"], job["lengths"], job["logits"], int(job["iterations"])
        )
        return {"outcome": "ok", "results": fields}
    raise ValueError(f"unknown job {op!r}")


def main() -> int:
    state: dict[str, Any] = {}
    out = sys.stdout
    # Anything the libraries print goes to stderr, so that stdout carries only replies.
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            reply = handle(job, state)
        except BaseException as exc:  # every failure becomes a reply; the parent decides what it means
            from ctxscope.agent.engine.point import classify, error_text, free

            kind = classify(exc)
            _reply({"outcome": kind, "error": error_text(exc)}, out)
            if kind != "oom":
                return 1
            session = state.get("session")
            if session is not None:
                free(session.device)
            continue
        _reply(reply, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
