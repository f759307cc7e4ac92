"""The seqs of pruned telemetry batches, kept as ranges once their key rows are gone (migration 7).

Retention removes a raw telemetry batch's samples and, with them, its key row in `records`: kept, one
row a batch, those rows grew the store for as long as it ran (a device sending a batch a second adds
86,400 a day, whatever the retention window). What the key row did, refuse a late redelivery of the
batch, a range does instead. `pruned_keys` holds per stream ranges [lo, hi] of which every seq was
stored: `pruned` of them by batches retention removed, the rest still keyed in `records`. A record
whose seq lies in a range and has no key row was pruned, so it is a duplicate. Seqs a stream stored
next to each other make one range and a seq never stored (a gap) splits them, so a stream that lost
nothing keeps one range however long it runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

# the store as a batch write sees it (base.Store provides it; base imports this module)
from ctxscope.collector.store.writes import ROWS_PER_STATEMENT, Store, chunks

Key = tuple[str, str, int]


def note_pruned(store: Store, cur: Any, keys: Iterable[Key]) -> None:
    """Delete the key rows of pruned batches and keep their seqs as ranges, in the caller's
    transaction (the one that deleted the batches)."""
    by_stream: dict[tuple[str, str], list[int]] = defaultdict(list)
    for device, stream, seq in keys:
        by_stream[(device, stream)].append(seq)
    # streams in one order in every pass: two collectors' passes lock their ranges without deadlock
    for (device, stream), seqs in sorted(by_stream.items()):
        seqs.sort()
        for seq in seqs:
            cur.execute(
                store._sql("DELETE FROM records WHERE device = ? AND stream = ? AND seq = ?"),
                (device, stream, seq),
            )
        for lo, hi, pruned in _runs(store, cur, device, stream, seqs):
            _add_range(store, cur, device, stream, lo, hi, pruned)


def pruned_among(store: Store, cur: Any, keys: Iterable[Key]) -> set[Key]:
    """Those of `keys` that lie in a stream's pruned ranges: stored once, as a batch retention has
    since removed, unless a key row still holds them (the caller's lookup of `records` says so)."""
    found: set[Key] = set()
    for chunk in chunks(sorted(set(keys)), ROWS_PER_STATEMENT):
        if store.placeholder == "%s":
            cur.execute(
                "SELECT k.device, k.stream, k.seq FROM unnest(%s::text[], %s::text[], %s::bigint[])"
                " AS k (device, stream, seq) JOIN pruned_keys p ON p.device = k.device"
                " AND p.stream = k.stream AND p.lo <= k.seq AND p.hi >= k.seq",
                [list(column) for column in zip(*chunk, strict=True)],
            )
        else:
            # the keys drive the join (SQLite's CROSS JOIN keeps them outer): one search each
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            cur.execute(
                f"SELECT k.column1, k.column2, k.column3 FROM (VALUES {values}) AS k CROSS JOIN"
                " pruned_keys AS p ON p.device = k.column1 AND p.stream = k.column2"
                " AND p.lo <= k.column3 AND p.hi >= k.column3",
                [value for key in chunk for value in key],
            )
        found.update((device, stream, int(seq)) for device, stream, seq in cur.fetchall())
    return found


def _runs(store: Store, cur: Any, device: str, stream: str, pruned: list[int]) -> list[tuple[int, int, int]]:
    """The runs of consecutive stored seqs that hold the pruned ones, (lo, hi, pruned seqs in it):
    a seq between two pruned ones that still has its key row joins them, a seq never stored splits
    them."""
    cur.execute(
        store._sql("SELECT seq FROM records WHERE device = ? AND stream = ? AND seq > ? AND seq < ?"),
        (device, stream, pruned[0], pruned[-1]),
    )
    kept = {int(row[0]) for row in cur.fetchall()}
    removed = set(pruned)
    runs: list[tuple[int, int, int]] = []
    for seq in sorted(kept | removed):
        count = 1 if seq in removed else 0
        if runs and runs[-1][1] == seq - 1:
            lo, _, n = runs[-1]
            runs[-1] = (lo, seq, n + count)
        else:
            runs.append((seq, seq, count))
    return [run for run in runs if run[2]]


def _add_range(store: Store, cur: Any, device: str, stream: str, lo: int, hi: int, pruned: int) -> None:
    """Store the range [lo, hi], joined with the stream's range before and after it where every seq
    between them is still keyed. On PostgreSQL the neighbours are locked, so that two collectors
    pruning one stream at once never both fold the same range into theirs."""
    lock = " FOR UPDATE" if store.placeholder == "%s" else ""
    stream_key = "device = ? AND stream = ?"
    cur.execute(
        store._sql(
            f"SELECT lo, hi, pruned FROM pruned_keys WHERE {stream_key} AND lo < ?"
            f" ORDER BY lo DESC LIMIT 1{lock}"
        ),
        (device, stream, lo),
    )
    before = cur.fetchone()
    cur.execute(
        store._sql(
            f"SELECT lo, hi, pruned FROM pruned_keys WHERE {stream_key} AND lo > ? ORDER BY lo LIMIT 1{lock}"
        ),
        (device, stream, lo),
    )
    after = cur.fetchone()
    for neighbour in (before, after):
        if neighbour is None:
            continue
        n_lo, n_hi, n_pruned = (int(value) for value in neighbour)
        if not _contiguous(store, cur, device, stream, min(hi, n_hi), max(lo, n_lo)):
            continue
        cur.execute(
            store._sql(f"DELETE FROM pruned_keys WHERE {stream_key} AND lo = ?"), (device, stream, n_lo)
        )
        lo, hi, pruned = min(lo, n_lo), max(hi, n_hi), pruned + n_pruned
    cur.execute(
        store._sql(
            "INSERT INTO pruned_keys VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, stream, lo) DO UPDATE SET"
            " hi = CASE WHEN excluded.hi > pruned_keys.hi THEN excluded.hi ELSE pruned_keys.hi END,"
            " pruned = pruned_keys.pruned + excluded.pruned"
        ),
        (device, stream, lo, hi, pruned),
    )


def _contiguous(store: Store, cur: Any, device: str, stream: str, end: int, start: int) -> bool:
    """Whether a range ending at `end` and one starting at `start` join: they touch or overlap, or
    every seq between them still has its key row."""
    if start <= end + 1:
        return True
    cur.execute(
        store._sql("SELECT COUNT(*) FROM records WHERE device = ? AND stream = ? AND seq > ? AND seq < ?"),
        (device, stream, end, start),
    )
    return int(cur.fetchone()[0]) == start - end - 1
