"""Plan validation, hashing and the shipped plan files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from ctxscope.agent import zoo
from ctxscope.agent.engine import plan as plans

BASE = {"name": "p", "models": ["qwen2.5-0.5b"], "context_lengths": [1024]}


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(plans.PlanError) as caught:
        plans.validate({**BASE, "models": ["qwen9-70b"]})
    message = str(caught.value)
    assert "qwen9-70b" in message
    assert all(spec.name in message for spec in zoo.list_models(include_unavailable=False))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"precisions": ["int3"]}, "precisions.0"),
        ({"context_lengths": [0]}, "context lengths must be >= 1"),
        ({"contxt_lengths": [1]}, "contxt_lengths"),
        ({"min_reps": 9, "max_reps": 3}, "max_reps (3) < min_reps (9)"),
        ({"memory_cap": "lots"}, "memory_cap"),
        ({"memory_cap": 10**40}, "memory_cap: Input should be less than or equal to 1125899906842624"),
        ({"memory_cap": 0}, "memory_cap: Input should be greater than or equal to 67108864"),
        ({"isolate_from": 10**30}, "isolate_from: Input should be less than or equal to 16777216"),
        ({"logits": "some"}, "logits"),
        ({"models": []}, "models"),
        ({"context_lengths": [10**12]}, "context lengths must be <= 16,777,216 tokens"),
        ({"context_lengths": list(range(1, 1000))}, "context_lengths: List should have at most 256 items"),
        ({"max_context": {"max_tokens": 10**12}}, "max_context.max_tokens"),
        ({"point_timeout_s": 1e9}, "point_timeout_s: Input should be less than or equal to 86400"),
        ({"seed": 2**70}, "seed"),
    ],
)
def test_bad_input_is_named(change: dict, fragment: str) -> None:
    with pytest.raises(plans.PlanError, match="invalid plan") as caught:
        plans.validate({**BASE, **change})
    assert fragment in str(caught.value)


def test_repeated_models_and_precisions_are_measured_once() -> None:
    """Like repeated context lengths: a repeat would measure the same point again under the same id."""
    models, precisions = ["qwen2.5-0.5b", "mamba2-780m", "qwen2.5-0.5b"], ["fp32", "bf16", "fp32"]
    plan = plans.validate({**BASE, "models": models, "precisions": precisions})
    assert (plan.models, plan.precisions) == (["qwen2.5-0.5b", "mamba2-780m"], ["fp32", "bf16"])
    labels = [pt.label for pt in plan.points()]
    assert len(labels) == len(set(labels)) == 4
    assert plan.hash == plans.validate({**BASE, "models": plan.models, "precisions": plan.precisions}).hash


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"context_lengths": ["32"]}, "context_lengths.0: Input should be a valid integer"),
        ({"context_lengths": [True]}, "context_lengths.0: Input should be a valid integer"),
        ({"prefer_native": "no"}, "prefer_native: Input should be a valid boolean"),
        ({"tiny": 1}, "tiny: Input should be a valid boolean"),
        ({"min_time_s": "0.5"}, "min_time_s: Input should be a valid number"),
        ({"max_context": {"enabled": True, "start": "64"}}, "max_context.start: Input should be a valid int"),
        ({"profile": {"phases": ["prefill"], "iterations": 2.0}}, "profile.iterations: Input should be"),
    ],
)
def test_values_of_the_wrong_type_are_not_coerced(change: dict, fragment: str) -> None:
    """`[true]` once became a 1-token context and `"no"` a false: a plan's values keep their TOML types."""
    with pytest.raises(plans.PlanError, match="invalid plan") as caught:
        plans.validate({**BASE, **change})
    assert fragment in str(caught.value)


def test_strict_plans_still_take_sizes_as_text_and_whole_seconds() -> None:
    plan = plans.validate({**BASE, "memory_cap": "24GiB", "min_time_s": 1, "max_context": {"enabled": True}})
    assert (int(plan.memory_cap or 0), plan.min_time_s) == (24 * 2**30, 1.0)
    # an override re-validates the plan's own dump (`agent run --logits`)
    assert plans.validate({**plan.model_dump(), "logits": "all"}).memory_cap == plan.memory_cap


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"min_time_s": 100, "max_time_s": 1}, "max_time_s (1.0) < min_time_s (100.0)"),
        (
            {"max_context": {"start": 1024, "max_tokens": 4096}},
            "[max_context] sets max_tokens, start but not enabled, so it runs nothing: add `enabled = true`",
        ),
        (
            {"profile": {"context_lengths": [1024]}},
            '[profile] sets context_lengths but not phases, so it runs nothing: add `phases = ["prefill"]`',
        ),
    ],
)
def test_contradictory_plans_are_refused_with_the_fix(change: dict, fragment: str) -> None:
    with pytest.raises(plans.PlanError, match="invalid plan") as caught:
        plans.validate({**BASE, **change})
    assert fragment in str(caught.value)


def test_a_table_switched_off_on_purpose_is_kept() -> None:
    plan = plans.validate(
        {**BASE, "max_context": {"enabled": False, "start": 64}, "profile": {"phases": [], "iterations": 2}}
    )
    assert not plan.max_context.enabled and plan.profile_lengths == []


def test_hash_is_canonical_and_sensitive() -> None:
    a = plans.validate({**BASE, "context_lengths": [4096, 1024], "memory_cap": "24GiB"})
    b = plans.validate(
        {
            "memory_cap": 24 * 2**30,
            "context_lengths": [1024, 4096, 1024],
            **{k: BASE[k] for k in ("models", "name")},
        }
    )
    assert a.hash == b.hash and len(a.hash) == 64
    assert int(a.memory_cap) == 24 * 2**30
    assert plans.validate({**BASE, "seed": 1}).hash != plans.validate(BASE).hash


def test_points_are_grouped_per_model_and_precision() -> None:
    p = plans.validate(
        {
            **BASE,
            "models": ["qwen2.5-0.5b", "mamba2-780m"],
            "precisions": ["bf16", "fp16"],
            "context_lengths": [2, 1],
        }
    )
    labels = [pt.label for pt in p.points()]
    assert labels[:2] == ["qwen2.5-0.5b/bf16/1", "qwen2.5-0.5b/bf16/2"]
    assert len(labels) == 8


def test_isolation_rules() -> None:
    assert plans.validate({**BASE, "isolate_from": 2048}).isolated(4096)
    assert not plans.validate({**BASE, "isolate_from": 2048}).isolated(1024)
    assert plans.validate({**BASE, "memory_cap": "8GiB"}).isolated(1)
    assert not plans.validate({**BASE, "isolate": "never", "isolate_from": 1}).isolated(4096)


def test_toml_errors_are_plan_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(plans.PlanError, match="not valid TOML"):
        plans.load(bad)


def test_unreadable_files_are_plan_errors(tmp_path: Path) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(plans.PlanError, match=r"binary.toml: not UTF-8 text \(byte 0\)"):
        plans.load(binary)
    with pytest.raises(plans.PlanError, match="cannot be read: Is a directory"):
        plans.load(tmp_path)


def test_shipped_plans_validate() -> None:
    """The plans in the package are offered on every device's plan form: a CPU smoke plan, one per Orin
    board and one for a 24 GB desktop GPU; experiments of one machine live under bench/."""
    folder = resources.files("ctxscope.agent.engine").joinpath("plans")
    names = sorted(f.name for f in folder.iterdir() if f.name.endswith(".toml"))
    assert names == sorted(
        f"{n}.toml" for n in ("cpu-smoke", "orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "desktop-24gb")
    )
    for name in names:
        loaded = plans.load(Path(str(folder.joinpath(name))))
        assert loaded.name == name.removesuffix(".toml")


def test_points_past_the_ssd_index_limit_are_warned_about() -> None:
    plan = plans.validate(
        {
            "name": "long",
            "models": ["mamba2-780m", "qwen2.5-0.5b", "mamba-790m"],
            "context_lengths": [262_144, 393_216, 524_288],
        }
    )
    (warning,) = plans.index_limit_warnings(plan)
    assert warning.startswith("mamba2-780m: 393216, 524288 tokens lie past 333046")
    assert plans.index_limit_warnings(plans.validate({**plan.model_dump(), "context_lengths": [1024]})) == []


def test_bench_plans_stay_valid() -> None:
    for path in sorted((Path(__file__).resolve().parents[3] / "bench" / "engine" / "plans").glob("*.toml")):
        assert plans.load(path).name == path.stem
