"""Rows and curves of one model on several kernel paths are named by what tells their paths apart."""

from __future__ import annotations

from ctxscope.collector.aggregate.points import SeriesKey, path_labels


def key(implementation: str, model: str = "qwen2.5-0.5b") -> SeriesKey:
    return SeriesKey("orin-1", model, "bf16", "last", implementation)


def test_a_model_on_one_path_needs_no_label() -> None:
    only = key("attention=sdpa;runtime=transformers")
    assert path_labels([only]) == {only: ""}


def test_headline_parts_first_then_only_what_still_tells_paths_apart() -> None:
    sdpa = key("attention=sdpa;decode_path=cuda_graph_static_cache;loader=a;runtime=transformers")
    gqa = key("attention=gqa;decode_path=cuda_graph_static_cache;loader=a;runtime=transformers")
    gqa_note = key(
        "attention=gqa;decode_note=x; with a note;decode_path=cuda_graph_static_cache;"
        "loader=a;runtime=transformers"
    )
    failed = key("")
    other_model = key("attention=flash", model="mamba2-780m")
    labels = path_labels([sdpa, gqa, gqa_note, failed, other_model])
    assert labels[sdpa] == "attention=sdpa;decode_note=-"
    assert labels[gqa] == "attention=gqa;decode_note=-"
    assert labels[gqa_note] == "attention=gqa;decode_note=x; with a note"
    assert labels[failed] == "no path named"
    assert labels[other_model] == ""
