"""Minute summaries of the raw telemetry window (SQLite): count, sum, minimum and maximum of each channel
per minute of sample time, kept as batches are merged, so that a History span inside the raw window
reads a row a minute instead of every batch (a day of one batch a second read 0.47 s a day raw,
results/collector/history/).

The rule that keeps each sample counted once, per (device, source) with a row in
`telemetry_summarized` (its `from_ns`, F, a minute boundary, and `max_span_ns`): for every minute
s >= F, the row (channel, s, unit) of `telemetry_minutes` is the fold of the finite samples in
[s, s + 60 s) of the merged batches still stored, and only merged batches are in it.
- A merge adds its batches' samples at or after F to their minutes, in the transaction that indexes
  them (merged = indexed); so a late batch (a spool replayed days later) joins its minutes as it merges.
- Retention, in the transaction that prunes batches, raises F past their newest sample and drops the
  rows below it: a row never holds a pruned sample.
- `max_span_ns` is the longest batch (last sample less first) merged since F began, so a batch with a
  sample before a time t ended before t + max_span_ns: the raw batches around the summarized minutes
  are found by a range of the index on end time. Batches merged before the store had summaries end
  before the F their migration set.
A store without summaries (PostgreSQL, which stages nothing) reads every batch (history.py).

A History read (`read_summarized_history`, one read transaction, so one snapshot of the three parts)
takes the rollups, the rows of the whole minutes [lo, hi) in its span at or after F, and the raw
samples of the rest of the span: from merged batches that end in the ranges that can hold them, and
from every batch not merged yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ctxscope.collector.store.history import (
    NS_PER_S,
    Folds,
    TelemetryHistory,
    add_fold,
    buckets_of,
    fold_rows,
    history_width_s,
    rollups_statement,
)

MINUTE_NS = 60 * NS_PER_S
INT64_MAX = 2**63 - 1
# Batches a merge reads and folds at once, with their channels (named in one statement, under SQLite's
# oldest limit of 999 parameters): bounds its memory (a merge of 500 devices' two minutes at one batch
# a second is 60,000 batches, a million channel rows at 17 channels).
BATCHES_PER_FOLD = 900

DDL = f"""
CREATE TABLE IF NOT EXISTS telemetry_minutes (
    device TEXT NOT NULL, source TEXT NOT NULL, channel TEXT NOT NULL, bucket_ns BIGINT NOT NULL,
    unit TEXT NOT NULL, n BIGINT NOT NULL, total DOUBLE PRECISION NOT NULL,
    low DOUBLE PRECISION NOT NULL, high DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, source, channel, bucket_ns, unit)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS telemetry_summarized (
    device TEXT NOT NULL, source TEXT NOT NULL, from_ns BIGINT NOT NULL, max_span_ns BIGINT NOT NULL,
    PRIMARY KEY (device, source)) WITHOUT ROWID;
INSERT OR IGNORE INTO telemetry_summarized
    SELECT device, source, (MAX(wall_end_ns) / {MINUTE_NS} + 1) * {MINUTE_NS}, 0 FROM (
    SELECT device, source, wall_end_ns FROM telemetry_index WHERE wall_end_ns IS NOT NULL
    UNION ALL SELECT device, source, wall_end_ns FROM telemetry WHERE wall_end_ns IS NOT NULL)
    GROUP BY device, source
"""

UPSERT = (
    "INSERT INTO telemetry_minutes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device, source, channel, bucket_ns, unit) DO UPDATE SET"
    " n = n + excluded.n, total = total + excluded.total,"
    " low = MIN(low, excluded.low), high = MAX(high, excluded.high)"
)

Series = tuple[str, str]  # (device, source)
Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def summarize_merged(cur: Any, first: str, last: str) -> None:
    """Add the batches a merge indexes now (devices `first`..`last` of `temp.merging`) to their minutes,
    in the merge's transaction: BATCHES_PER_FOLD batches at a time with their channels, all folded at
    once (numpy), since the merge holds the store's writer meanwhile. A minute that two folds share is
    upserted twice, which adds up."""
    merging = (
        "l.id IN (SELECT id FROM temp.merging WHERE device >= ? AND device <= ?)"
        " AND l.wall_end_ns IS NOT NULL"
    )
    cur.execute(
        "SELECT device, source, MAX(wall_end_ns - wall_start_ns) FROM telemetry_log l"
        f" WHERE {merging} GROUP BY device, source ORDER BY device, source",
        (first, last),
    )
    spans = [(str(device), str(source), int(span)) for device, source, span in cur.fetchall()]
    if not spans:
        return
    cur.executemany("INSERT OR IGNORE INTO telemetry_summarized VALUES (?, ?, 0, 0)", [s[:2] for s in spans])
    cur.executemany(
        "UPDATE telemetry_summarized SET max_span_ns = MAX(max_span_ns, ?) WHERE device = ? AND source = ?",
        [(span, device, source) for device, source, span in spans],
    )
    cur.execute(
        "SELECT device, source, from_ns FROM telemetry_summarized WHERE device >= ? AND device <= ?",
        (first, last),
    )
    since = {(device, source): int(from_ns) for device, source, from_ns in cur.fetchall()}
    batches = cur.connection.cursor()
    batches.execute(
        f"SELECT l.id, l.device, l.source, l.mono_to_wall_ns, l.t_ns FROM telemetry_log l WHERE {merging}"
        " ORDER BY l.id",
        (first, last),
    )
    while chunk := batches.fetchmany(BATCHES_PER_FOLD):
        cur.execute(
            "SELECT id, channel, unit, dtype, data FROM telemetry_log_channels"
            f" WHERE id IN ({', '.join('?' * len(chunk))}) ORDER BY id",
            [row[0] for row in chunk],
        )
        channels = cur.fetchall()
        for dtype in sorted({row[3] for row in channels}):
            alike = [row for row in channels if row[3] == dtype]
            cur.executemany(UPSERT, _minute_folds(chunk, alike, dtype, since))


def _minute_folds(
    batches: list[tuple[Any, ...]], channels: list[tuple[Any, ...]], dtype: str, since: dict[Series, int]
) -> list[tuple[Any, ...]]:
    """UPSERT parameters of the finite samples at or after their series' F, by channel, unit and minute:
    `batches` of (id, device, source, mono_to_wall_ns, t_ns) in id order, and their `channels` of (id,
    channel, unit, dtype, data), all of `dtype` (a batch's channels have its timestamps' length). Each
    batch's times are decoded once, not once a channel."""
    ids = np.asarray([row[0] for row in batches], np.int64)
    lengths = np.asarray([len(row[4]) // 8 for row in batches], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    wall = np.frombuffer(b"".join(bytes(row[4]) for row in batches), dtype="<i8") + np.repeat(
        np.asarray([int(row[3]) for row in batches], np.int64), lengths
    )
    floor_of = np.asarray([since[(row[1], row[2])] for row in batches], np.int64)
    # a channel row of a batch without samples (not among `batches`) has no samples either
    channel_ids = np.asarray([row[0] for row in channels], np.int64)
    of = np.minimum(np.searchsorted(ids, channel_ids), len(ids) - 1)
    found = ids[of] == channel_ids
    channels, of = [row for row, hit in zip(channels, found.tolist(), strict=True) if hit], of[found]
    series: dict[tuple[str, str, str, str], int] = {}
    group_of = np.asarray(
        [
            series.setdefault((*batches[b][1:3], row[1], row[2]), len(series))
            for b, row in zip(of.tolist(), channels, strict=True)
        ],
        np.int64,
    )
    counts = lengths[of]
    # each channel row's samples take its batch's times: the batch's start plus 0, 1, ... in the row
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    at = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(firsts - starts[of], counts)
    wall_c = wall[at]
    values = np.frombuffer(b"".join(bytes(row[4]) for row in channels), dtype=f"<{dtype}").astype(np.float64)
    group = np.repeat(group_of, counts)
    keep = np.isfinite(values) & (wall_c >= np.repeat(floor_of[of], counts))
    if not keep.any():
        return []
    # runs of samples of one row and one minute (a row's samples mostly lie in one minute), folded in
    # order; then the runs of each channel and minute folded together: a sort of runs, not of samples
    minute = wall_c // MINUTE_NS * MINUTE_NS
    row_starts = np.zeros(len(wall_c), dtype=bool)
    row_starts[firsts[1:]] = True
    runs = np.flatnonzero(np.concatenate([[True], (np.diff(minute) != 0) | row_starts[1:]]))
    n = np.add.reduceat(keep.astype(np.int64), runs)
    total = np.add.reduceat(np.where(keep, values, 0.0), runs)
    low = np.minimum.reduceat(np.where(keep, values, np.inf), runs)
    high = np.maximum.reduceat(np.where(keep, values, -np.inf), runs)
    held = n > 0
    group, minute, n, total, low, high = (a[held] for a in (group[runs], minute[runs], n, total, low, high))
    order = np.lexsort((minute, group))
    group, minute, n, total, low, high = (a[order] for a in (group, minute, n, total, low, high))
    heads = np.flatnonzero(np.concatenate([[True], (np.diff(group) != 0) | (np.diff(minute) != 0)]))
    keys = list(series)
    return [
        (*keys[g][:3], start, keys[g][3], count, sum_, least, most)
        for g, start, count, sum_, least, most in zip(
            group[heads].tolist(),
            minute[heads].tolist(),
            np.add.reduceat(n, heads).tolist(),
            np.add.reduceat(total, heads).tolist(),
            np.minimum.reduceat(low, heads).tolist(),
            np.maximum.reduceat(high, heads).tolist(),
            strict=True,
        )
    ]


def prune_summaries(cur: Any, pruned: dict[Series, tuple[int, set[str]]]) -> None:
    """Retention pruned batches whose newest sample was (per series) at most the given time, on the given
    channels: raise F past it and drop those channels' rows below F, in retention's transaction. (Rows of
    a channel not in them stay valid, below F read from raw, and go when that channel's batches do.)"""
    for (device, source), (newest_ns, channels) in sorted(pruned.items()):
        from_ns = (newest_ns // MINUTE_NS + 1) * MINUTE_NS
        cur.execute(
            "UPDATE telemetry_summarized SET from_ns = MAX(from_ns, ?) WHERE device = ? AND source = ?",
            (from_ns, device, source),
        )
        cur.executemany(
            "DELETE FROM telemetry_minutes WHERE device = ? AND source = ? AND channel = ? AND bucket_ns < ?",
            [(device, source, channel, from_ns) for channel in sorted(channels)],
        )


RAW_COLUMNS = "c.unit, t.mono_to_wall_ns, t.t_ns, c.dtype, c.data"


def read_summarized_history(
    query: Query,
    key: tuple[str, str, str],
    since_ns: int,
    until_ns: int,
    max_points: int,
    with_unmerged: bool,
) -> TelemetryHistory | None:
    """The history of the channel `key` (device, source, channel) over [since_ns, until_ns) from
    rollups, minute summaries and raw batches; None when the span holds no whole summarized minute
    (then every batch of it is read, history.py). `query` runs on one read transaction;
    `with_unmerged`: the device has batches not merged yet."""
    device, source, channel = key
    found = query(
        "SELECT from_ns, max_span_ns FROM telemetry_summarized WHERE device = ? AND source = ?",
        (device, source),
    )
    if not found:
        return None
    from_ns, max_span = int(found[0][0]), int(found[0][1])
    lo = max(-(-since_ns // MINUTE_NS) * MINUTE_NS, from_ns)
    hi = until_ns // MINUTE_NS * MINUTE_NS
    if lo >= hi:
        return None
    width_s = history_width_s(since_ns, until_ns, max_points)
    width_ns = width_s * NS_PER_S
    folds: Folds = {}
    statement, params = rollups_statement(key, since_ns, until_ns, width_s)
    for unit, start, width, n, total, low, high in query(statement, params):
        add_fold(folds, (unit, int(start), int(width)), int(n), float(total), float(low), float(high))
    for unit, start, n, total, low, high in query(
        f"SELECT unit, (bucket_ns / {width_ns}) * {width_ns} AS start_ns, CAST(SUM(n) AS BIGINT),"
        " SUM(total), MIN(low), MAX(high) FROM telemetry_minutes WHERE device = ? AND source = ?"
        " AND channel = ? AND bucket_ns >= ? AND bucket_ns < ? GROUP BY unit, start_ns",
        (*key, lo, hi),
    ):
        add_fold(folds, (unit, int(start), width_s), int(n), float(total), float(low), float(high))
    outside = [(since_ns, lo), (hi, until_ns)]
    # merged batches with a sample in [since, lo) end in [since, lo + max_span], those with one in
    # [hi, until) in [hi, until + max_span]; one range when the two meet
    ends = [(since_ns, min(lo + max_span + 1, INT64_MAX)), (hi, min(until_ns + max_span + 1, INT64_MAX))]
    if ends[0][1] >= ends[1][0]:
        ends = [(since_ns, ends[1][1])]
    merged = (
        f"SELECT {RAW_COLUMNS} FROM telemetry_index i JOIN telemetry_log t ON t.id = i.id"
        " JOIN telemetry_log_channels c ON c.id = i.id AND c.channel = ?"
        " WHERE i.device = ? AND i.source = ? AND i.wall_end_ns >= ? AND i.wall_end_ns < ?"
        " AND t.wall_start_ns < ?"
        f" UNION ALL SELECT {RAW_COLUMNS} FROM telemetry t JOIN telemetry_channels c"
        " ON c.device = t.device AND c.stream = t.stream AND c.seq = t.seq AND c.channel = ?"
        " WHERE t.device = ? AND t.source = ? AND t.wall_end_ns >= ? AND t.wall_end_ns < ?"
        " AND t.wall_start_ns < ?"
    )
    for start, end in ends:
        one = (channel, device, source, start, end, until_ns)
        fold_rows(folds, query(merged, one * 2), outside, width_s)
    if with_unmerged:
        unmerged = (
            f"SELECT {RAW_COLUMNS} FROM telemetry_log_unmerged t JOIN telemetry_log_channels c"
            " ON c.id = t.id AND c.channel = ? WHERE t.device = ? AND t.source = ?"
            " AND t.wall_end_ns >= ? AND t.wall_start_ns < ?"
        )
        rows = query(unmerged, (channel, device, source, since_ns, until_ns))
        fold_rows(folds, rows, [(since_ns, until_ns)], width_s)
    return TelemetryHistory(since_ns, until_ns, width_s, buckets_of(folds))
