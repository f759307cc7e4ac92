"""The SQLite write benchmark stores every record of its fleet and accounts for the bytes it wrote."""

from __future__ import annotations

import pytest

from tests.bench_scripts import load_bench


def test_every_record_is_stored_and_the_bytes_add_up() -> None:
    row = load_bench("collector/sqlite_writes.py").run(
        page_size=4096, autocheckpoint=1000, per_commit=4, devices=20, ticks=3
    )
    assert row["records_stored"] == 20 * 3 + 6  # a telemetry batch per device and tick, a result every tenth
    parts = row["written_during_ticks_per_record_kb"] + row["written_by_final_checkpoint_per_record_kb"]
    assert abs(row["written_per_record_kb"] - parts) < 1e-9
    assert row["written_per_record_kb"] > row["growth_per_record_kb"] > 0


def test_merges_every_few_ticks_store_every_record_and_read_device_pages() -> None:
    row = load_bench("collector/sqlite_writes.py").run(
        page_size=4096, autocheckpoint=1000, per_commit=8, devices=20, ticks=4, merge_every=2
    )
    assert row["records_stored"] == 20 * 4 + 8 and row["merge_every_ticks"] == 2
    assert row["used_growth_per_record_kb"] > 0 and row["written_over_used_growth"] > 1
    reads = row["one_device_reads_ms"]
    assert isinstance(reads, list) and len(reads) == 5 and all(ms > 0 for ms in reads)


def test_the_wal_by_table_accounts_for_every_frame() -> None:
    """With no checkpoint the WAL holds every frame written: their bytes by table add up to its size."""
    row = load_bench("collector/sqlite_writes.py").run(
        page_size=4096,
        autocheckpoint=1000,
        per_commit=8,
        devices=20,
        ticks=4,
        merge_every=2,
        wal_by_table=True,
    )
    by_table = row["wal_bytes_per_record_by_table"]
    assert isinstance(by_table, dict)
    assert {"telemetry_log", "telemetry_log_channels", "telemetry_index", "records"} <= set(by_table)
    frames = sum(by_table.values()) * row["records_stored"] / (4096 + 24)  # whole frames, and some
    assert frames > 0 and frames == pytest.approx(round(frames))
