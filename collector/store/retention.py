"""Telemetry retention: raw samples for N days, per-bucket rollups (mean, min, max, count) after.

Raw telemetry is about 0.1 GB per device per day. `apply_retention` takes every telemetry batch
that ended before the cutoff, folds its samples into fixed time buckets per (device, source,
channel) in `telemetry_rollups`, and deletes the raw batch, in chunks of one transaction each, so
a crash leaves each chunk either rolled up and deleted or untouched. Rollups of a bucket split
across two passes merge exactly (counts add, means weight by count). A pruned batch's key row in
`records` goes too: its stream's seqs are kept as ranges instead (pruned_keys.py), which refuse a late
redelivery of the batch as its key row did. Results, runs and logs are never pruned. A pass first
merges what the store has staged (staging.py), so a late batch past the cutoff is pruned like any
other; it prunes both places raw batches are kept: the device-keyed tables and the telemetry log
(merged batches in arrival order). A batch of no samples has no end time and nothing to roll up:
every pass prunes it. Last, a pass folds rollups older than `coarse_after_days` into wider ones
(rollups.py), so that what is kept indefinitely grows by about 17 MB a device a year, not 1 GB.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click
import numpy as np

from ctxscope.collector.store.base import Store
from ctxscope.collector.store.pruned_keys import note_pruned
from ctxscope.collector.store.rollups import Bucket, coarsen, write_buckets

log = logging.getLogger(__name__)
NS_PER_S = 1_000_000_000
CHUNK_BATCHES = 200
INT64_MIN = -(2**63)


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep raw telemetry `raw_days`; after that, `rollup_s`-second rollups, which are folded into
    `coarse_s`-second rollups once `coarse_after_days` old (those are kept indefinitely)."""

    raw_days: float = 30.0
    rollup_s: int = 60
    coarse_after_days: float = 90.0
    coarse_s: int = 3600

    def __post_init__(self) -> None:
        if self.raw_days < 0:
            raise ValueError(f"raw_days must be >= 0, not {self.raw_days}")
        if self.rollup_s < 1:
            raise ValueError(f"rollup_s must be >= 1 second, not {self.rollup_s}")
        if self.coarse_after_days < 0:
            raise ValueError(f"coarse_after_days must be >= 0, not {self.coarse_after_days}")
        if self.coarse_s <= self.rollup_s or self.coarse_s % self.rollup_s:
            raise ValueError(
                f"coarse_s ({self.coarse_s} s) must be a multiple of rollup_s ({self.rollup_s} s) larger"
                " than it, so that each rollup falls in one coarse rollup"
            )

    def cutoff_ns(self, now_ns: int) -> int:
        return now_ns - int(self.raw_days * 86400 * NS_PER_S)

    def coarse_cutoff_ns(self, now_ns: int) -> int:
        return now_ns - int(self.coarse_after_days * 86400 * NS_PER_S)


@dataclass
class RetentionOutcome:
    batches_pruned: int = 0
    samples_rolled_up: int = 0  # finite samples folded into rollups
    samples_unread: int = 0  # not finite (a metric the agent could not read): pruned, in no rollup
    buckets_written: int = 0
    rollups_coarsened: int = 0  # rollups folded into coarse ones
    coarse_buckets_written: int = 0


@dataclass(frozen=True)
class _Batch:
    """A raw telemetry batch to prune: what its samples need, and the statements (with their
    parameters) that read its channels and delete it."""

    device: str
    stream: str
    seq: int
    source: str
    mono_to_wall_ns: int
    t_ns: bytes
    channels: tuple[str, tuple[Any, ...]]
    deletes: tuple[tuple[str, tuple[Any, ...]], ...]


@dataclass(frozen=True)
class _Due:
    """Which raw batches a pass prunes: a condition on a batch's end time (`{end}`, the column), one
    that an index on the end time answers by a search, and its parameters."""

    condition: str
    params: tuple[int, ...]

    def where(self, end: str = "wall_end_ns") -> str:
        return self.condition.format(end=end)


def _due(cutoff: int) -> tuple[_Due, ...]:
    """Batches that ended before the cutoff, and those of no samples: one has no end time (NULL) and
    nothing to roll up, and no cutoff would ever reach it."""
    return _Due("{end} < ?", (cutoff,)), _Due("{end} IS NULL", ())


Picker = Callable[[Store, Any, _Due, str], list[_Batch]]


def _device_keyed(store: Store, cur: Any, due: _Due, claim: str) -> list[_Batch]:
    """The oldest batches of the device-keyed tables (what earlier versions merged, and what a store
    that stages nothing writes)."""
    cur.execute(
        store._sql(
            "SELECT device, stream, seq, source, mono_to_wall_ns, t_ns FROM telemetry"
            f" WHERE {due.where()} ORDER BY wall_end_ns LIMIT {CHUNK_BATCHES}{claim}"
        ),
        due.params,
    )
    where = "WHERE device = ? AND stream = ? AND seq = ?"
    return [
        _Batch(
            device,
            stream,
            seq,
            source,
            mono_to_wall,
            t_ns,
            (f"SELECT channel, unit, dtype, data FROM telemetry_channels {where}", (device, stream, seq)),
            tuple(
                (f"DELETE FROM {table} {where}", (device, stream, seq))
                for table in ("telemetry_channels", "telemetry")
            ),
        )
        for device, stream, seq, source, mono_to_wall, t_ns in cur.fetchall()
    ]


def _indexed_series(store: Store, dues: tuple[_Due, ...]) -> Iterator[tuple[str, str]]:
    """Each (device, source) of the telemetry log's index with a batch due, by an index search a pair
    and one a condition (a loose scan: the index holds a row per batch), on the reading
    connection: a pass opens no write transaction for a series with nothing to prune."""
    after: tuple[str, str] | None = None
    while True:
        if after is None:
            rows = store._query("SELECT device, source FROM telemetry_index ORDER BY device, source LIMIT 1")
        else:
            rows = store._query(
                "SELECT device, source FROM telemetry_index WHERE (device, source) > (?, ?)"
                " ORDER BY device, source LIMIT 1",
                after,
            )
        if not rows:
            return
        after = (rows[0]["device"], rows[0]["source"])
        if any(
            store._query(
                "SELECT 1 AS due FROM telemetry_index WHERE device = ? AND source = ?"
                f" AND {due.where()} LIMIT 1",
                (*after, *due.params),
            )
            for due in dues
        ):
            yield after


def _arrival_ordered(device: str, source: str) -> Picker:
    """The oldest merged batches of one device's source in the telemetry log (staging.py: merged
    telemetry stays in arrival order, found through its per-device index; what is not merged yet is
    left for a later pass)."""

    def pick(store: Store, cur: Any, due: _Due, claim: str) -> list[_Batch]:
        cur.execute(
            store._sql(
                "SELECT i.id, s.stream, s.seq, s.mono_to_wall_ns, s.t_ns FROM telemetry_index i"
                " JOIN telemetry_log s"
                f" ON s.id = i.id WHERE i.device = ? AND i.source = ? AND {due.where('i.wall_end_ns')}"
                f" ORDER BY i.wall_end_ns LIMIT {CHUNK_BATCHES}{claim}"
            ),
            (device, source, *due.params),
        )
        return [
            _Batch(
                device,
                stream,
                seq,
                source,
                mono_to_wall,
                t_ns,
                ("SELECT channel, unit, dtype, data FROM telemetry_log_channels WHERE id = ?", (id_,)),
                (
                    ("DELETE FROM telemetry_log_channels WHERE id = ?", (id_,)),
                    ("DELETE FROM telemetry_log WHERE id = ?", (id_,)),
                    ("DELETE FROM telemetry_index WHERE device = ? AND id = ?", (device, id_)),
                ),
            )
            for id_, stream, seq, mono_to_wall, t_ns in cur.fetchall()
        ]

    return pick


def apply_retention(store: Store, policy: RetentionPolicy, now_ns: int | None = None) -> RetentionOutcome:
    """Roll up and delete raw telemetry older than the policy's cutoff; return what was done."""
    now = time.time_ns() if now_ns is None else now_ns
    cutoff = policy.cutoff_ns(now)
    outcome = RetentionOutcome()
    store.merge_staged()  # a staged batch may be past the cutoff too (a device's late backlog)
    # On PostgreSQL several collectors may prune one store at once: each pass locks the batches it
    # folds and skips those another pass holds, so no batch is folded into the rollups twice.
    claim = " FOR UPDATE SKIP LOCKED" if store.placeholder == "%s" else ""
    dues = _due(cutoff)
    pickers = itertools.chain(
        [_device_keyed], itertools.starmap(_arrival_ordered, _indexed_series(store, dues))
    )
    for pick in pickers:
        for due in dues:
            while _prune_chunk(store, pick, due, claim, policy, outcome):
                pass
    outcome.rollups_coarsened, outcome.coarse_buckets_written = coarsen(
        store, policy.coarse_cutoff_ns(now), policy.coarse_s
    )
    return outcome


def _prune_chunk(
    store: Store, pick: Picker, due: _Due, claim: str, policy: RetentionPolicy, outcome: RetentionOutcome
) -> bool:
    """Fold up to CHUNK_BATCHES of the oldest batches `pick` finds into the rollups and delete them, in
    one transaction; False when there were none."""
    with store._transaction() as cur:
        batches = pick(store, cur, due, claim)
        if not batches:
            return False
        buckets: dict[tuple[str, str, str, int], Bucket] = {}
        pruned: dict[tuple[str, str], tuple[int, set[str]]] = {}
        for batch in batches:
            wall = np.frombuffer(bytes(batch.t_ns), dtype="<i8") + int(batch.mono_to_wall_ns)
            statement, params = batch.channels
            cur.execute(store._sql(statement), params)
            newest, channels = pruned.get((batch.device, batch.source), (INT64_MIN, set()))
            if len(wall):
                newest = max(newest, int(wall.max()))
            for channel, unit, dtype, data in cur.fetchall():
                channels.add(channel)
                values = np.frombuffer(bytes(data), dtype=f"<{dtype}").astype(np.float64)
                series = (batch.device, batch.source, channel)
                folded = _fold(buckets, series, unit, wall, values, policy.rollup_s)
                outcome.samples_rolled_up += folded
                outcome.samples_unread += len(values) - folded
            pruned[(batch.device, batch.source)] = (newest, channels)
            for statement, params in batch.deletes:
                cur.execute(store._sql(statement), params)
        store._telemetry_pruned(cur, pruned)
        note_pruned(store, cur, ((batch.device, batch.stream, batch.seq) for batch in batches))
        write_buckets(store, cur, buckets, policy.rollup_s)
        outcome.batches_pruned += len(batches)
        outcome.buckets_written += len(buckets)
    return True


def _fold(
    buckets: dict[tuple[str, str, str, int], Bucket],
    series: tuple[str, str, str],
    unit: str,
    wall: np.ndarray,
    values: np.ndarray,
    rollup_s: int,
) -> int:
    """Add a channel's samples to their buckets; how many were added. A sample that is not a finite
    number (NaN is what an agent records when a metric could not be read) is left out: it has no place
    in a mean, minimum or maximum, and a bucket of such samples alone is not written."""
    finite = np.isfinite(values)
    wall, values = wall[finite], values[finite]
    width = rollup_s * NS_PER_S
    starts = (wall // width) * width
    grouped: dict[int, list[float]] = defaultdict(list)
    for start, value in zip(starts.tolist(), values.tolist(), strict=True):
        grouped[start].append(value)
    for start, vals in grouped.items():
        bucket = buckets.setdefault((*series, start), Bucket(unit, 0, 0.0, vals[0], vals[0]))
        bucket.add(len(vals), sum(vals), min(vals), max(vals))
    return len(values)


def coarse_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The coarse tier's options, shared by `collector run` and `collector prune`."""
    command = click.option(
        "--coarse-s",
        type=click.IntRange(min=2),
        default=RetentionPolicy.coarse_s,
        show_default=True,
        help="width of the rollups kept indefinitely, in seconds (a multiple of --rollup-s)",
    )(command)
    return click.option(
        "--coarse-after-days",
        type=click.FloatRange(min=0),
        default=RetentionPolicy.coarse_after_days,
        show_default=True,
        help="keep --rollup-s rollups this many days, then fold them into --coarse-s rollups",
    )(command)


class RetentionLoop:
    """Applies a policy now and then every `interval_s` in a background thread, until stopped.
    A failed pass is logged and retried at the next interval; it never stops ingest."""

    def __init__(self, store: Store, policy: RetentionPolicy, interval_s: float = 3600.0) -> None:
        self.store = store
        self.policy = policy
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctxscope-retention", daemon=True)

    def start(self) -> RetentionLoop:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                outcome = apply_retention(self.store, self.policy)
                self.store.upkeep.succeeded("retention")
                if outcome.batches_pruned:
                    log.info(
                        "retention: %d telemetry batches older than %g days rolled up into %d buckets",
                        outcome.batches_pruned,
                        self.policy.raw_days,
                        outcome.buckets_written,
                    )
                if outcome.rollups_coarsened:
                    log.info(
                        "retention: %d rollups older than %g days folded into %d rollups of %d s",
                        outcome.rollups_coarsened,
                        self.policy.coarse_after_days,
                        outcome.coarse_buckets_written,
                        self.policy.coarse_s,
                    )
            except Exception as exc:
                self.store.upkeep.failed("retention", exc)
                log.exception("retention pass failed; retrying in %.0f s", self.interval_s)
            self._stop.wait(self.interval_s)


@click.command("prune")
@click.option("--store", "store_url", default=None, help="sqlite:///PATH or postgresql://USER@HOST/DB.")
@click.option(
    "--raw-days",
    type=click.FloatRange(min=0),
    default=RetentionPolicy.raw_days,
    show_default=True,
    help="keep raw telemetry this many days.",
)
@click.option(
    "--rollup-s",
    type=click.IntRange(min=1),
    default=RetentionPolicy.rollup_s,
    show_default=True,
    help="rollup bucket width in seconds after that.",
)
@coarse_options
@click.option("--json", "as_json", is_flag=True, help="print what was done as JSON.")
def prune(
    store_url: str | None,
    raw_days: float,
    rollup_s: int,
    coarse_after_days: float,
    coarse_s: int,
    as_json: bool,
) -> None:
    """Roll up raw telemetry older than --raw-days into --rollup-s buckets (mean, min, max, count) and
    delete the raw samples; fold rollups older than --coarse-after-days into --coarse-s buckets.
    Results, runs and logs are never pruned. `collector run` does the same every hour."""
    from ctxscope.collector.settings import default_store_url
    from ctxscope.collector.store import open_store

    try:
        policy = RetentionPolicy(raw_days, rollup_s, coarse_after_days, coarse_s)
        store = open_store(store_url or default_store_url())
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        outcome = apply_retention(store, policy)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(outcome)))
    else:
        click.echo(
            f"pruned {outcome.batches_pruned} telemetry batches older than {raw_days:g} days:"
            f" {outcome.samples_rolled_up} samples into {outcome.buckets_written} {rollup_s} s rollups,"
            f" {outcome.samples_unread} unread (not a finite number) left out;"
            f" folded {outcome.rollups_coarsened} rollups older than {coarse_after_days:g} days into"
            f" {outcome.coarse_buckets_written} {coarse_s} s rollups"
        )
