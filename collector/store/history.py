"""A telemetry channel over any span, months or a year: buckets of count, mean, minimum and maximum
from the rollups and the raw telemetry still kept, at most `max_points` of them. This module reads
every raw batch of the span; a store that keeps minute summaries of its raw window (SQLite) reads
whole minutes from them and only the rest from batches (minutes.py), with the folds defined here.

Retention (retention.py) keeps raw samples for a while and then folds them into rollups, 60 s buckets
that are folded again into hours later (rollups.py); a batch's rollups are written in the transaction
that deletes it, so at any commit each sample is either raw or rolled up. One statement reads both
parts (the rollups grouped in SQL, the raw batches of the span), so it sees one commit: a retention
pass committing meanwhile can neither hide a batch nor count it twice. Raw samples are packed arrays,
so they are folded here (numpy), as retention folds them: samples that are not finite are left out.

The answer's nominal width is the narrowest of LADDER_S (then whole days) that covers the span in at
most `max_points` buckets, aligned to the epoch. A rollup wider than it, or of a width that does not
divide it, is folded into a bucket of a width that holds whole rollups (an hour's rollup stays an hour
at a 15 min width), and narrower buckets inside a wider one join it: every bucket says its width and
none overlap. Folds are exact: counts add, means weight by count, minimum and maximum are kept. A
rollup counts at its start, a raw sample at its time: both within [since, until). A span without data
has no bucket (a gap, never a zero).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxscope.collector.store.buckets import Bucket

Query = Callable[[str, Sequence[Any]], list[dict[str, Any]]]
# A store's `_stream`: one statement's rows, so many at a time.
Stream = Callable[[str, Sequence[Any], int], Iterator[list[dict[str, Any]]]]

NS_PER_S = 1_000_000_000
DAY_S = 86400
# Bucket widths an answer may take, narrowest first (after the last, whole days).
LADDER_S = (60, 300, 900, 3600, 21600, DAY_S)
# Rows read and folded at once: bounds the memory of a span of millions of raw batches.
ROWS_PER_FOLD = 4096


@dataclass(frozen=True)
class HistoryBucket:
    """Samples from `start_ns` for `width_s` seconds: their count, mean, minimum and maximum."""

    start_ns: int
    width_s: int
    n: int
    mean: float
    min: float
    max: float
    unit: str


@dataclass(frozen=True)
class TelemetryHistory:
    """A channel's buckets over [since_ns, until_ns), oldest first; `width_s` is the nominal width."""

    since_ns: int
    until_ns: int
    width_s: int
    buckets: list[HistoryBucket]


def history_width_s(since_ns: int, until_ns: int, max_points: int) -> int:
    """The narrowest width of LADDER_S, else whole days, whose epoch-aligned buckets that meet
    [since_ns, until_ns) number at most `max_points`."""
    if max_points < 1 or until_ns <= since_ns:
        raise ValueError(f"need max_points >= 1 and since < until, not {max_points}, {since_ns}, {until_ns}")
    for width in LADDER_S:
        if _bucket_count(since_ns, until_ns, width) <= max_points:
            return width
    days = max(2, -(-(until_ns - since_ns) // (max_points * DAY_S * NS_PER_S)))
    while _bucket_count(since_ns, until_ns, days * DAY_S) > max_points:
        days += 1
    return days * DAY_S


def _bucket_count(since_ns: int, until_ns: int, width_s: int) -> int:
    width_ns = width_s * NS_PER_S
    return (until_ns - 1) // width_ns - since_ns // width_ns + 1


def _held(width_s: int) -> str:
    """The width a rollup of width `bucket_s` is answered in at the nominal width W: W when it divides
    W, its own when W divides it, else W * its own (which both divide): always whole rollups."""
    return (
        f"CASE WHEN {width_s} = ({width_s} / bucket_s) * bucket_s THEN {width_s}"
        f" WHEN bucket_s = (bucket_s / {width_s}) * {width_s} THEN bucket_s ELSE {width_s} * bucket_s END"
    )


_ROLLUP_COLUMNS = (
    "unit, (bucket_ns / (held_s * 1000000000)) * (held_s * 1000000000) AS start_ns, held_s AS width_s,"
    " CAST(SUM(n) AS BIGINT) AS n, SUM(mean * n) AS total, MIN(min) AS low, MAX(max) AS high"
)
_ROLLUPS_FROM = (
    "FROM (SELECT unit, bucket_ns, n, mean, min, max, {held} AS held_s FROM telemetry_rollups"
    " WHERE device = ? AND source = ? AND channel = ? AND bucket_ns >= ? AND bucket_ns < ?) AS r"
    " GROUP BY unit, start_ns, width_s"
)


def rollups_statement(
    key: tuple[str, str, str], since_ns: int, until_ns: int, width_s: int
) -> tuple[str, tuple[Any, ...]]:
    """The channel's rollups in [since_ns, until_ns) grouped into their answer buckets: rows of (unit,
    start_ns, width_s, n, total, low, high)."""
    return f"SELECT {_ROLLUP_COLUMNS} {_ROLLUPS_FROM.format(held=_held(width_s))}", (*key, since_ns, until_ns)


def _statement(series: str, width_s: int) -> str:
    """Rollups grouped into their answer buckets, then the raw batches of the span, in one statement."""
    return (
        f"SELECT 0 AS raw, {_ROLLUP_COLUMNS}, NULL AS mono_to_wall_ns, NULL AS t_ns, NULL AS dtype,"
        f" NULL AS data {_ROLLUPS_FROM.format(held=_held(width_s))}"
        " UNION ALL SELECT 1, unit, NULL, NULL, NULL, NULL, NULL, NULL, mono_to_wall_ns, t_ns, dtype, data"
        f" FROM {series} WHERE device = ? AND source = ? AND channel = ?"
        " AND wall_end_ns >= ? AND wall_start_ns < ?"
    )


Folds = dict[tuple[str, int, int], Bucket]  # (unit, start_ns, width_s) -> the bucket


def read_history(
    stream: Stream,
    series: str,
    key: tuple[str, str, str],
    since_ns: int,
    until_ns: int,
    max_points: int,
) -> TelemetryHistory:
    """The history of the channel `key` (device, source, channel) over [since_ns, until_ns), its raw
    samples read from the view `series` (a store's telemetry series view): every raw batch of the span."""
    width_s = history_width_s(since_ns, until_ns, max_points)
    span = (since_ns, until_ns)
    folds: Folds = {}
    for rows in stream(_statement(series, width_s), (*key, *span, *key, *span), ROWS_PER_FOLD):
        raw = [(r["unit"], r["mono_to_wall_ns"], r["t_ns"], r["dtype"], r["data"]) for r in rows if r["raw"]]
        fold_rows(folds, raw, [span], width_s)
        for row in rows:
            if not row["raw"]:
                bucket = (row["unit"], int(row["start_ns"]), int(row["width_s"]))
                add_fold(
                    folds, bucket, int(row["n"]), float(row["total"]), float(row["low"]), float(row["high"])
                )
    return TelemetryHistory(since_ns, until_ns, width_s, buckets_of(folds))


def add_fold(folds: Folds, key: tuple[str, int, int], n: int, total: float, low: float, high: float) -> None:
    bucket = folds.get(key)
    if bucket is None:
        folds[key] = Bucket(key[0], n, total, low, high)
    else:
        bucket.add(n, total, low, high)


def fold_rows(
    folds: Folds, rows: list[tuple[Any, ...]], keep: list[tuple[int, int | None]], width_s: int
) -> None:
    """Fold raw rows (unit, mono_to_wall_ns, t_ns, dtype, data) into `folds`, the samples of each unit
    and dtype together, only those within the `keep` intervals."""
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for unit, mono_to_wall, t_ns, dtype, data in rows:
        grouped[(unit, dtype)].append((mono_to_wall, t_ns, data))
    for (unit, dtype), parts in grouped.items():
        fold_raw(folds, unit, dtype, parts, keep, width_s)


def fold_raw(
    folds: Folds,
    unit: str,
    dtype: str,
    parts: list[tuple[Any, ...]],
    keep: list[tuple[int, int | None]],
    width_s: int,
) -> None:
    """Fold raw batches' samples, `parts` of (mono_to_wall_ns, t_ns, data) of one unit and dtype, into
    buckets of `width_s`: only the finite samples within one of the `keep` intervals [start, end) (an
    end of None: no end)."""
    t_ns = np.frombuffer(b"".join(bytes(p[1]) for p in parts), dtype="<i8")
    lengths = [len(p[1]) // 8 for p in parts]
    wall = t_ns + np.repeat(np.asarray([int(p[0]) for p in parts], np.int64), lengths)
    values = np.frombuffer(b"".join(bytes(p[2]) for p in parts), dtype=f"<{dtype}").astype(np.float64)
    inside = np.zeros(len(wall), dtype=bool)
    for start, end in keep:
        inside |= (wall >= start) if end is None else (wall >= start) & (wall < end)
    keep_mask = np.isfinite(values) & inside
    for start, n, total, low, high in bucket_folds(wall[keep_mask], values[keep_mask], width_s * NS_PER_S):
        add_fold(folds, (unit, start, width_s), n, total, low, high)


def bucket_folds(
    wall: np.ndarray, values: np.ndarray, width_ns: int
) -> Iterable[tuple[int, int, float, float, float]]:
    """(start, count, sum, minimum, maximum) of each bucket the samples fall in."""
    if not len(values):
        return []
    starts = wall // width_ns * width_ns
    order = np.argsort(starts, kind="stable")
    starts, values = starts[order], values[order]
    firsts = np.concatenate([[0], np.flatnonzero(np.diff(starts)) + 1])
    counts = np.diff(np.concatenate([firsts, [len(values)]]))
    return zip(
        starts[firsts].tolist(),
        counts.tolist(),
        np.add.reduceat(values, firsts).tolist(),
        np.minimum.reduceat(values, firsts).tolist(),
        np.maximum.reduceat(values, firsts).tolist(),
        strict=True,
    )


def buckets_of(folds: Folds) -> list[HistoryBucket]:
    """The folds as buckets, oldest first, each narrower one that starts inside a wider one of its
    unit merged into it (raw minutes beside an hour already rolled up, say)."""
    merged: list[tuple[tuple[str, int, int], Bucket]] = []
    open_by_unit: dict[str, tuple[tuple[str, int, int], Bucket]] = {}
    for key in sorted(folds, key=lambda k: (k[1], -k[2], k[0])):
        unit, start, _ = key
        wide = open_by_unit.get(unit)
        if wide is not None and start < wide[0][1] + wide[0][2] * NS_PER_S:
            part = folds[key]
            wide[1].add(part.n, part.total, part.low, part.high)
            continue
        open_by_unit[unit] = (key, folds[key])
        merged.append(open_by_unit[unit])
    return [
        HistoryBucket(start, width, b.n, b.total / b.n, b.low, b.high, unit)
        for (unit, start, width), b in merged
    ]


def rollup_series(query: Query, device: str) -> list[tuple[str, str, str]]:
    """(source, channel, unit) of each channel a device has rollups of, its unit the newest rollup's:
    one index search a channel, not a scan of a year of rollups (some 200,000 rows a device)."""
    found: list[tuple[str, str, str]] = []
    rows = query(
        "SELECT source, channel FROM telemetry_rollups WHERE device = ? ORDER BY source, channel LIMIT 1",
        (device,),
    )
    while rows:
        source, channel = rows[0]["source"], rows[0]["channel"]
        newest = query(
            "SELECT unit FROM telemetry_rollups WHERE device = ? AND source = ? AND channel = ?"
            " ORDER BY bucket_ns DESC LIMIT 1",
            (device, source, channel),
        )
        found.append((source, channel, newest[0]["unit"]))
        rows = query(
            "SELECT source, channel FROM telemetry_rollups WHERE device = ? AND (source, channel) > (?, ?)"
            " ORDER BY source, channel LIMIT 1",
            (device, source, channel),
        )
    return found
