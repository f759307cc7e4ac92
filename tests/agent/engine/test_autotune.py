"""The Triton autotuner's choices travel with each result; absent where nothing was tuned."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from ctxscope.agent.engine import autotune, point
from ctxscope.agent.engine.outcome import Measured


@dataclass
class StandInConfig:
    """triton.Config's part that the record reads."""

    kwargs: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 3

    def all_kwargs(self) -> dict[str, Any]:
        return {**self.kwargs, "num_warps": self.num_warps, "num_stages": self.num_stages}


@dataclass
class StandInAutotuner:
    """triton.runtime.autotuner.Autotuner's part that the record reads: the wrapped kernel (here
    a Heuristics-like layer around the Python function) and the cache of chosen configs by key."""

    fn: Any
    cache: dict[tuple[Any, ...], StandInConfig] = field(default_factory=dict)


@dataclass
class StandInWrapper:
    """A layer between the autotuner and the function, as triton.heuristics and JITFunction are."""

    fn: Any


class StandInDtype:
    def __str__(self) -> str:
        return "torch.bfloat16"


def _chunk_scan_fwd_kernel() -> None:
    """Stands for a Triton kernel's Python function (its name and module name the kernel)."""


def _install(monkeypatch: pytest.MonkeyPatch, *tuners: StandInAutotuner) -> None:
    """Two modules that both hold the tuners, as a kernel imported elsewhere is; Triton's type is the
    stand-in's."""
    for name in ("fake_ssm.ops.ssd_chunk_scan", "fake_ssm.ops.ssd_combined"):
        module = types.ModuleType(name)
        for index, tuner in enumerate(tuners):
            setattr(module, f"kernel_{index}", tuner)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(autotune, "triton_autotuner_type", lambda: StandInAutotuner)


def test_each_choice_is_named_once_with_its_key_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    tuned = StandInAutotuner(
        StandInWrapper(StandInWrapper(_chunk_scan_fwd_kernel)),
        {
            (256, 64, StandInDtype()): StandInConfig({"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64}, 4, 3),
            (256, 128, StandInDtype()): StandInConfig({"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 32}, 8, 2),
        },
    )
    untuned = StandInAutotuner(_chunk_scan_fwd_kernel)
    _install(monkeypatch, tuned, untuned)
    choices = autotune.autotune_choices()
    name = f"{__name__}._chunk_scan_fwd_kernel"
    assert choices == [
        {
            "kernel": name,
            "key": [256, 128, "torch.bfloat16"],
            "config": {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 32, "num_warps": 8, "num_stages": 2},
        },
        {
            "kernel": name,
            "key": [256, 64, "torch.bfloat16"],
            "config": {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "num_warps": 4, "num_stages": 3},
        },
    ]


def test_nothing_to_record_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autotune, "triton_autotuner_type", lambda: None)
    assert autotune.autotune_choices() == []


def _session() -> point.Session:
    return point.Session(point.ModelChoice(name="mamba2-130m", precision="fp32", device="cpu", tiny=True))


def _measure() -> Measured:
    policy = point.LoopPolicy(warmups=0, min_reps=1, max_reps=1, min_time_s=0.0)
    settings = point.PointSettings(context_len=8, decode_tokens=0, policy=policy)
    return point.measure_point(_session(), settings)


def test_a_result_carries_the_choices_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    tuned = StandInAutotuner(_chunk_scan_fwd_kernel, {(64,): StandInConfig({"BLOCK_SIZE_M": 32})})
    _install(monkeypatch, tuned)
    outcome = _measure()
    assert outcome.details["triton_autotune"] == [
        {
            "kernel": f"{__name__}._chunk_scan_fwd_kernel",
            "key": [64],
            "config": {"BLOCK_SIZE_M": 32, "num_warps": 4, "num_stages": 3},
        }
    ]


def test_no_tuned_kernel_no_autotune_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, StandInAutotuner(_chunk_scan_fwd_kernel))
    assert "triton_autotune" not in _measure().details


def test_a_profile_point_carries_the_choices_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctxscope.agent.profiling.run import ProfileSettings, profile_session

    tuned = StandInAutotuner(_chunk_scan_fwd_kernel, {(64,): StandInConfig({"BLOCK_SIZE_M": 32})})
    _install(monkeypatch, tuned)
    settings = ProfileSettings(lengths=(16,), iterations=1, timed_policy=None)
    (profiled,) = profile_session(_session(), settings, None)
    assert [c["config"]["BLOCK_SIZE_M"] for c in profiled.details()["triton_autotune"]] == [32]
