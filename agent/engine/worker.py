"""The child process that runs points and probes: `python -m ctxscope.agent.engine.worker`.

It reads typed jobs (`protocol.py`) one per line and answers each with its typed outcome. The first
job loads the model; later jobs measure points, probe one context length, or profile the model's
operators at given lengths. After a fault (anything but out-of-memory), a malformed job included,
the worker replies and exits, since a CUDA error may have poisoned its context. It also ends, with
the processes it started, as soon as its parent is gone (killed, or stopped by a time limit): left
running on the GPU it would skew whatever is measured next, idle power included.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from ctxscope.agent.engine import point
from ctxscope.agent.engine.outcome import Failure, Loaded, Measured, Probed, Profiled
from ctxscope.agent.engine.protocol import REPLY_MARK, Job, LoadJob, PointJob, ProbeJob, R, read_job

if TYPE_CHECKING:
    from ctxscope.agent.engine.isolation import Worker


def _reply(outcome: Failure | Loaded | Measured | Probed | Profiled, stream: TextIO) -> None:
    stream.write(REPLY_MARK + outcome.model_dump_json() + "\n")
    stream.flush()


def job_label(job: Job) -> str:
    """What a job does, in words: the model load, or the point, probe or profile at its lengths."""
    if isinstance(job, LoadJob):
        c = job.choice
        return f"load of model {c.name} ({c.precision}{', tiny' if c.tiny else ''}) on {c.device}"
    if isinstance(job, PointJob):
        return f"point at {job.settings.context_len} tokens"
    if isinstance(job, ProbeJob):
        return f"probe (one prefill) at {job.context_len} tokens"
    return f"profile at {'/'.join(map(str, job.lengths))} tokens"


def request(worker: Worker, job: Job, expected: type[R], timeout_s: float) -> R | Failure:
    """`worker.request`, with a failure's error naming the job that failed or timed out: "no reply
    within 0.5 s" alone does not tell a model load from a point."""
    outcome = worker.request(job, expected, timeout_s)
    if isinstance(outcome, Failure):
        outcome.error = f"{job_label(job)}: {outcome.error}"
    return outcome


def _apply_memory_cap(device: str, cap_bytes: int | None) -> dict[str, int | float | str]:
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


def _probe(session: point.Session, job: ProbeJob) -> Probed:
    import torch

    from ctxscope.agent.engine import decoding

    ids = decoding.synthetic_prompt(session.vocab_size, job.context_len, seed=job.seed, device=session.device)
    started = time.perf_counter()
    with torch.inference_mode():
        split = point.prefill_memory(session, ids, job.logits)
    return Probed(
        duration_s=time.perf_counter() - started,
        peak_bytes=split.peak_bytes,
        cache_bytes=split.cache_bytes,
        logits_bytes=split.logits_bytes,
        weights_bytes=split.weights_bytes,
        allocator_reserved_bytes=torch.cuda.max_memory_reserved() if session.device.type == "cuda" else None,
        **_outside_allocator(session.device),
    )


def handle(job: Job, state: dict[str, Any]) -> Loaded | Measured | Probed | Profiled:
    """Run one job; exceptions propagate to the caller, which classifies them."""
    if isinstance(job, LoadJob):
        _apply_memory_cap(job.choice.device, job.memory_cap_bytes)
        session = point.Session(job.choice)
        state["session"] = session
        # measured again now that the model ran once at load time: kernel images load lazily
        cap = _apply_memory_cap(job.choice.device, job.memory_cap_bytes)
        return Loaded(load_s=session.load_s, cap=cap, implementation=session.implementation())
    if "session" not in state:
        raise RuntimeError(f"a {job.op} job before any model was loaded")
    session = state["session"]
    if isinstance(job, PointJob):
        return point.measure_point(session, job.settings)
    if isinstance(job, ProbeJob):
        return _probe(session, job)
    from ctxscope.agent.profiling.run import plan_profile

    return Profiled(results=plan_profile(session, job.phases, job.lengths, job.logits, job.iterations))


PARENT_POLL_S = 0.5


def die_with_parent(parent: int) -> threading.Thread:
    """Watch the parent process; once it is gone, kill this process and the group it leads (the
    isolation starts each worker in a session of its own, compile workers included)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    watcher = threading.Thread(target=watch, name="ctxscope-parent-watch", daemon=True)
    watcher.start()
    return watcher


def main() -> int:
    die_with_parent(os.getppid())
    state: dict[str, Any] = {}
    out = sys.stdout
    # Anything the libraries print goes to stderr, so that stdout carries only replies.
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(read_job(line), state)
        except BaseException as exc:  # every failure becomes a reply; the parent decides what it means
            kind = point.classify(exc)
            _reply(Failure(outcome=kind, error=point.error_text(exc)), out)
            if kind != "oom":
                return 1
            session = state.get("session")
            if session is not None:
                point.free(session.device)
            continue
        _reply(reply, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
