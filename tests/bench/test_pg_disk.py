"""The PostgreSQL disk counters of the scale benchmark: WAL positions and differences of snapshots."""

from __future__ import annotations

import pytest

from tests.bench_scripts import load_bench

pg_disk = load_bench("collector/pg_disk.py")


def snap(seconds: float, lsn: str, pages: tuple[int, int, int], proc: int, store: int, fpi: int = 0):
    return pg_disk.DiskSnapshot(
        monotonic_s=seconds,
        wal_lsn=lsn,
        wal_records=10 * fpi,
        wal_fpi=fpi,
        wal_bytes=0,
        wal_write=2 * fpi,
        wal_sync=fpi,
        commits=fpi,
        pages_written=dict(zip(pg_disk.PAGE_WRITE_COUNTERS, pages, strict=True)),
        block_size=8192,
        proc_write_bytes=proc,
        postgres_processes=7,
        store_bytes=store,
    )


@pytest.mark.parametrize(
    ("lsn", "expected"),
    [("0/0", 0), ("0/1A", 26), ("1/0", 2**32), ("16/B374D848", 0x16 * 2**32 + 0xB374D848)],
)
def test_lsn_bytes(lsn: str, expected: int):
    assert pg_disk.lsn_bytes(lsn) == expected


def test_disk_delta_counts_wal_across_the_32_bit_boundary_and_pages_in_blocks():
    before = snap(100.0, "2/FFFFFF00", (10, 1, 2), proc=1_000, store=65_536, fpi=3)
    after = snap(140.5, "3/00000100", (15, 2, 2), proc=91_000, store=81_920, fpi=8)
    delta = pg_disk.disk_delta(before, after)
    assert delta["seconds"] == 40.5
    assert delta["wal_bytes"] == 0x200
    assert delta["wal_lsn"] == ["2/FFFFFF00", "3/00000100"]
    assert delta["wal_full_page_images"] == 5
    assert delta["wal_records"] == 50
    assert (delta["wal_writes"], delta["wal_syncs"], delta["commits"]) == (10, 5, 5)
    assert delta["data_pages_written"] == {"buffers_checkpoint": 5, "buffers_clean": 1, "buffers_backend": 0}
    assert delta["data_page_bytes"] == 6 * 8192
    assert delta["wal_plus_data_bytes"] == 0x200 + 6 * 8192
    assert delta["proc_write_bytes"] == 90_000
    assert delta["store_growth_bytes"] == 16_384


def test_stat_written_bytes_reads_the_sectors_written_field():
    line = (
        "   32410     1020  1869618    9411   288214   210934 24577632   362020        0   256728   393648\n"
    )
    assert pg_disk.stat_written_bytes(line) == 24_577_632 * 512
