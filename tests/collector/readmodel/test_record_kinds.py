"""Records that are not curve points stay out of the curves, and views never merge what differs: the
committed H200 operator profiles (sent before profiles carried `details.kind`), a point profiled in
several runs and on two kernel paths, and shrunk variants beside real models in crossovers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ctxscope.collector.aggregate.characterize import characterize
from ctxscope.collector.importer import import_files
from ctxscope.collector.readmodel import views
from ctxscope.collector.readmodel.figures import shares_figure
from ctxscope.collector.shrunk import shrunk_label

REPO = Path(__file__).resolve().parents[3]
PROFILES = [
    REPO / "results/profiling" / name for name in ("h200_records.jsonl.gz", "h200_records_session3.jsonl.gz")
]
DEVICE = "h200-reference"


def test_committed_profiles_are_operator_shares_not_points(store: Any) -> None:
    import_files(store, PROFILES, device=DEVICE)
    page = views.device(store, DEVICE)
    assert page["operator_shares"]
    points = page["characterization"]["points"]
    assert not [p for p in points if any(name.startswith("profile_") for name in p["metrics"])]
    assert page["characterization"]["max_context"] == []  # profiled lengths are no context limit


def test_each_profiled_point_is_one_bar_of_at_most_100_percent(store: Any) -> None:
    import_files(store, PROFILES, device=DEVICE)
    shares = views.device(store, DEVICE)["operator_shares"]
    labels = [s["label"] for s in shares]
    assert len(labels) == len(set(labels))
    mamba2 = [label for label in labels if label.startswith("mamba2-130m bf16 1024 prefill")]
    assert sorted(mamba2) == [
        "mamba2-130m bf16 1024 prefill [mamba_ssm]",
        "mamba2-130m bf16 1024 prefill [transformers]",
    ]
    stacks: dict[str, float] = defaultdict(float)
    for trace in shares_figure(shares)["data"]:
        for x, y in zip(trace["x"], trace["y"], strict=True):
            stacks[x] += y
    assert max(stacks.values()) <= 100.5


def test_a_shrunk_model_is_never_set_beside_a_real_one(result_factory: Any) -> None:
    ttft = {1024: (2.0, 5.0), 4096: (10.0, 10.0), 16384: (60.0, 20.0)}

    def curves(transformer: str, ssm: str) -> list[Any]:
        return [
            result
            for n, (t, o) in ttft.items()
            for result in (
                result_factory(model=transformer, context_len=n, metrics={"ttft": ("ms", [t])}),
                result_factory(model=ssm, family="ssm", context_len=n, metrics={"ttft": ("ms", [o])}),
            )
        ]

    mixed = characterize(curves(shrunk_label("qwen2.5-0.5b"), "mamba-130m"))
    assert mixed["crossovers"] == []
    both = characterize(curves(shrunk_label("qwen2.5-0.5b"), shrunk_label("mamba-130m")))
    assert [round(c["length_tokens"]) for c in both["crossovers"][0]["crossings"]] == [4096]
