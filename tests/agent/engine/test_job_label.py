"""A worker's failure names the job that failed or timed out: a model load, or a point at N tokens."""

from __future__ import annotations

from typing import Any

from ctxscope.agent.engine.loop import LoopPolicy
from ctxscope.agent.engine.outcome import Failure, Loaded, Measured, Probed, Profiled
from ctxscope.agent.engine.point import ModelChoice, PointSettings
from ctxscope.agent.engine.protocol import Job, LoadJob, PointJob, ProbeJob, ProfileJob
from ctxscope.agent.engine.worker import request


class _SilentWorker:
    """A worker whose every job times out, as `Worker.request` reports it."""

    def request(self, job: Job, expected: type[Any], timeout_s: float) -> Failure:
        return Failure(outcome="timeout", error=f"no reply within {timeout_s:g} s", wall_s=timeout_s)


def _error(job: Job, expected: type[Any]) -> str:
    outcome = request(_SilentWorker(), job, expected, 0.5)  # type: ignore[arg-type]
    assert isinstance(outcome, Failure) and outcome.outcome == "timeout"
    return outcome.error


def test_each_job_kind_is_named_in_its_error() -> None:
    choice = ModelChoice(name="mamba-130m", precision="bf16", device="cuda")
    settings = PointSettings(context_len=4096, logits="last", decode_tokens=0, policy=LoopPolicy())
    assert (
        _error(LoadJob(choice=choice), Loaded)
        == "load of model mamba-130m (bf16) on cuda: no reply within 0.5 s"
    )
    assert _error(PointJob(settings=settings), Measured) == "point at 4096 tokens: no reply within 0.5 s"
    probe = ProbeJob(context_len=2048, logits="last")
    assert _error(probe, Probed) == "probe (one prefill) at 2048 tokens: no reply within 0.5 s"
    profile = ProfileJob(phases=["prefill"], lengths=[16, 32], logits="last", iterations=1)
    assert _error(profile, Profiled) == "profile at 16/32 tokens: no reply within 0.5 s"
