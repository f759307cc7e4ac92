"""The max-context searches recorded on the H200 against the zoo's analytic int32 limit of mamba_ssm's
SSD kernels: every probe that faulted lies past the limit, every probe that ran lies within it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxscope.agent.zoo import get_spec, ssd_int32_limit_tokens

RESULTS = Path(__file__).resolve().parents[3] / "results" / "engine"
SEARCH_FILES = [
    "h200-call5/maxctx_capped.json",
    "h200-call6/maxctx_capped_2.json",
    "h200-call6/maxctx_uncapped.json",
]


def recorded_probes() -> list[tuple[str, dict]]:
    probes = []
    for name in SEARCH_FILES:
        for search in json.loads((RESULTS / name).read_text()):
            probes += [(search["model"], probe) for probe in search["probes"]]
    return probes


@pytest.mark.parametrize("model", ["mamba2-780m", "falcon-h1-0.5b", "zamba2-1.2b"])
def test_recorded_faults_lie_past_the_limit_and_successes_within_it(model: str) -> None:
    limit = ssd_int32_limit_tokens(get_spec(model))
    assert limit is not None
    probes = [probe for name, probe in recorded_probes() if name == model]
    faults = [p["context_len"] for p in probes if p["outcome"] == "fault"]
    fits = [p["context_len"] for p in probes if p["outcome"] == "ok"]
    assert faults, f"no recorded fault for {model}"
    assert all("illegal memory access" in p["error"] for p in probes if p["outcome"] == "fault")
    assert min(faults) > limit >= max(fits)


def test_mamba2_fault_is_bracketed_within_one_percent() -> None:
    limit = ssd_int32_limit_tokens(get_spec("mamba2-780m"))
    probes = [p for name, p in recorded_probes() if name == "mamba2-780m" and p["context_len"] > 300_000]
    largest_ok = max(p["context_len"] for p in probes if p["outcome"] == "ok")
    smallest_fault = min(p["context_len"] for p in probes if p["outcome"] == "fault")
    assert largest_ok <= limit < smallest_fault
    assert (smallest_fault - largest_ok) / largest_ok < 0.01
