"""`ctxscope.collector.load(url)`: the committed H200 results as a DataFrame with units."""

from __future__ import annotations

from pathlib import Path

import pytest

import ctxscope.collector
from ctxscope.collector.importer import import_files
from ctxscope.collector.store import open_store

pd = pytest.importorskip("pandas")
REPO = Path(__file__).resolve().parents[2]
CURVES = REPO / "results/engine/h200-call2/curves.jsonl"


def test_load_returns_results_with_units(store_url: str) -> None:
    store = open_store(store_url)
    import_files(store, [CURVES], device="h200-reference")
    store.close()

    frame = ctxscope.collector.load(store_url)
    assert isinstance(frame, pd.DataFrame)
    assert set(frame["device"]) == {"h200-reference"}
    assert frame["run_id"].nunique() == 1 and frame["point_id"].nunique() == 15
    ttft = frame[frame["metric"] == "ttft"]
    assert len(ttft) == 15
    # One canonical unit per metric, named in a column and in attrs.
    assert ttft["unit"].nunique() == 1
    assert frame.attrs["units"]["ttft"] == ttft["unit"].iloc[0]
    row = ttft[(ttft["model"] == "qwen2.5-0.5b") & (ttft["context_len"] == 16384)].iloc[0]
    assert row["n"] == len(row["samples"]) >= 3
    assert row["min"] <= row["p25"] <= row["median"] <= row["p75"] <= row["max"]
    assert row["median"] == pytest.approx(pd.Series(row["samples"]).median())
    assert frame["context_len"].dtype == "int64"
    assert ctxscope.collector.load(store_url, devices=["nobody"]).empty
