"""The History benchmark reads back every sample it wrote, in the buckets the History buttons ask for."""

from __future__ import annotations

from tests.bench_scripts import load_bench


def test_every_sample_written_is_in_the_history_once() -> None:
    row = load_bench("collector/history_span.py").run(days=0.02, samples=5, channels=3, repeat=2)
    assert row["batches"] == 1728 and row["bucket_width_s"] == 60  # 28.8 minutes in minute buckets
    assert row["buckets"] in (29, 30)  # epoch-aligned minutes the span meets
    assert len(row["read_s"]) == 2 and row["read_median_s"] > 0
