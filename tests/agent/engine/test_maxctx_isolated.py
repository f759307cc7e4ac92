"""Max-context search with real child processes on a tiny model, against an emulated byte budget."""

from __future__ import annotations

import pytest
import torch

from ctxscope.agent import zoo
from ctxscope.agent.engine import maxctx
from ctxscope.agent.engine.point import BYTE_BUDGET_ENV, KILL_AT_ENV, ModelChoice
from ctxscope.agent.engine.recorder import RunRecorder
from ctxscope.agent.records import MemorySink
from ctxscope.shared.messages import PointResult

CHOICE = ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True)


@pytest.mark.slow
def test_budget_search_with_a_hard_kill_in_the_middle() -> None:
    # The budget holds the weights plus 700 tokens of KV cache and all-position fp32 logits, so the search
    # grows 256 -> 512 -> 1024 (emulated OOM) and bisects; the child probing 768 SIGKILLs itself.
    spec = zoo.tiny_spec("qwen2.5-0.5b")
    loaded = zoo.load_model(spec, device="cpu", dtype=torch.float32)
    per_token = zoo.cache_bytes_per_token(spec, torch.float32) + spec.config["vocab_size"] * 4
    env = {BYTE_BUDGET_ENV: str(loaded.weight_bytes + 700 * per_token), KILL_AT_ENV: "768"}
    probe = maxctx.isolated_probe(CHOICE, logits="all", memory_cap_bytes=None, timeout_s=120, env=env)

    result = maxctx.search(probe, start=256, max_tokens=4096, rel_tol=0.2)

    by_length = {p.context_len: p for p in result.probes}
    assert [by_length[n].outcome for n in (256, 512, 1024, 768)] == ["ok", "ok", "oom", "fault"]
    assert "emulated out of memory" in (by_length[1024].error or "")
    assert "SIGKILL" in (by_length[768].error or "")  # recorded, and the search went on
    assert result.largest_ok is not None and 512 <= result.largest_ok <= 700
    assert result.smallest_failing is not None
    assert result.smallest_failing - result.largest_ok <= 0.2 * result.largest_ok
    assert all(p.wall_s > 0 for p in result.probes)


def test_timeout_kills_the_child() -> None:
    # A load that cannot finish in 10 ms: the probe reports a timeout, not a hang.
    probe = maxctx.isolated_probe(CHOICE, logits="last", memory_cap_bytes=None, timeout_s=0.01)
    result = probe(64)
    assert result.outcome == "timeout"
    # the load timed out, not the probe: the error says which
    assert (result.error or "").startswith("load of model qwen2.5-0.5b (fp32, tiny) on cpu: no reply within")


@pytest.fixture(scope="module")
def capped_cpu_search() -> PointResult:
    """One probe of a Mamba-family model on the CPU, with a memory cap asked for."""
    choice = ModelChoice(name="mamba2-780m", precision="fp32", device="cpu", tiny=True)
    settings = maxctx.SearchSettings(start=16, max_tokens=16, memory_cap_bytes=64 << 20, probe_timeout_s=120)
    with RunRecorder(MemorySink(), plan={"name": "test"}, total=1, torch_device="cpu") as run:
        record, _ = maxctx.record_search(run, choice, "ssm", settings)
    return record


def test_a_search_record_names_what_its_probes_ran(capped_cpu_search: PointResult) -> None:
    """On the CPU a Mamba-family model runs transformers' torch code: the search's record says so, as
    every other record does."""
    assert capped_cpu_search.outcome == "ok", capped_cpu_search.error
    assert capped_cpu_search.implementation["runtime"] == "transformers"
    assert capped_cpu_search.implementation["ssm_scan"] == "transformers torch fallback"
    assert "implementation" not in capped_cpu_search.details["search"]["probes"][0]


def test_a_cap_the_cpu_cannot_apply_is_not_claimed(capped_cpu_search: PointResult) -> None:
    """The worker caps CUDA device memory only: on the CPU the search ran uncapped and says so."""
    method = capped_cpu_search.metrics["max_context"].method
    assert "no memory cap" in method and "CUDA device memory only" in method
    assert "of the process's device memory" not in method
    assert capped_cpu_search.details["memory_cap_bytes"] is None
    assert capped_cpu_search.details["memory_cap_not_applied_bytes"] == 64 << 20
