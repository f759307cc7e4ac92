"""`ctxscope collector export`: stored results as flat tables, CSV or Parquet.

Two tables: `results` (one row per point result: its fields, each metric's median, quartiles, n and
unit, and the raw samples as JSON so nothing is lost) and `aggregates` (one row per device x model x
precision x logits x kernel path x context length, re-aggregated from the pooled raw samples, each
metric with the methods its samples were taken by). A third,
`telemetry_rollups`, where the store holds any: the telemetry retention kept after the raw samples aged
out (one row per device, source, channel and bucket: its start, width, count, mean, min and max), the
only record of a device's power and temperature over months.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ctxscope.collector.aggregate.points import aggregate_points, is_calibration
from ctxscope.collector.aggregate.stats import summarize
from ctxscope.collector.settings import open_for_reading
from ctxscope.collector.shrunk import labelled_point_results
from ctxscope.collector.store import Store, StoreOpenError, StoreURLError
from ctxscope.collector.store.rollups import rollup_channels, rollups
from ctxscope.shared.messages import PointResult

FORMATS = ("csv", "parquet")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class ExportError(RuntimeError):
    """An export that cannot be written (e.g. Parquet without pyarrow)."""


def result_rows(results: Iterable[PointResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        row: dict[str, Any] = {
            "device": r.device,
            "run_id": r.run_id,
            "point_id": r.point_id,
            "ts_ns": r.ts,
            "model": r.model,
            "family": r.family,
            "context_len": r.context_len,
            "precision": r.precision,
            "logits": r.logits,
            "outcome": r.outcome,
            "error": r.error,
            "implementation": json.dumps(r.implementation, sort_keys=True),
        }
        for name, metric in sorted(r.metrics.items()):
            s = summarize([metric])
            row |= {
                f"{name}_median": s.median,
                f"{name}_p25": s.p25,
                f"{name}_p75": s.p75,
                f"{name}_n": s.n,
                f"{name}_unit": s.unit,
                f"{name}_samples": json.dumps(metric.samples),
                f"{name}_raw_unit": metric.unit,
                f"{name}_method": metric.method,
            }
        rows.append(row)
    return rows


def aggregate_rows(results: Iterable[PointResult]) -> list[dict[str, Any]]:
    rows = []
    for a in aggregate_points(results):
        row: dict[str, Any] = {
            **a.key.as_dict(),
            "family": a.family,
            "context_len": a.context_len,
            "outcomes": json.dumps(dict(a.outcomes), sort_keys=True),
            "decode_ooms": a.decode_ooms,
            "runs": len(a.runs),
        }
        for name, s in sorted(a.metrics.items()):
            row |= {
                f"{name}_median": s.median,
                f"{name}_p25": s.p25,
                f"{name}_p75": s.p75,
                f"{name}_min": s.minimum,
                f"{name}_max": s.maximum,
                f"{name}_n": s.n,
                f"{name}_unit": s.unit,
                f"{name}_methods": json.dumps(list(s.methods)),
            }
        if a.problems:
            row["problems"] = json.dumps(a.problems)
        rows.append(row)
    return rows


ROLLUP_COLUMNS = (
    "device", "source", "channel", "unit", "bucket_start_ns", "bucket_start_utc", "bucket_s", "n", "mean",
    "min", "max",
)  # fmt: skip
PARQUET_BATCH_ROWS = 50_000


def rollup_rows(store: Store, devices: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Each rollup of the devices' telemetry, its bucket's start in ns since the epoch and in UTC; read
    one device's channel at a time, so that a fleet's months of rollups are never in memory at once."""
    for device in devices:
        for channel in rollup_channels(store, device):
            for r in rollups(store, device, channel):
                start = datetime.fromtimestamp(r["bucket_ns"] / 1e9, tz=timezone.utc)
                yield {
                    "device": r["device"],
                    "source": r["source"],
                    "channel": r["channel"],
                    "unit": r["unit"],
                    "bucket_start_ns": r["bucket_ns"],
                    "bucket_start_utc": start.isoformat(timespec="seconds"),
                    "bucket_s": r["bucket_s"],
                    "n": r["n"],
                    "mean": r["mean"],
                    "min": r["min"],
                    "max": r["max"],
                }


def write_stream(rows: Iterable[dict[str, Any]], columns: Sequence[str], path: Path, fmt: str) -> Path | None:
    """Write rows as they come (CSV row by row, Parquet in row groups); None, and no file, when there
    were none."""
    target = path.with_suffix(f".{fmt}")
    written = 0
    if fmt == "csv":
        with target.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([csv_cell(row.get(c, "")) for c in columns])
                written += 1
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ExportError("Parquet export needs pyarrow (pip install pyarrow)") from exc
        parquet: Any = None
        for batch in _batches(rows):
            table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in batch])
            parquet = parquet or pq.ParquetWriter(target, table.schema)
            parquet.write_table(table)
            written += len(batch)
        if parquet is not None:
            parquet.close()
    if not written:
        target.unlink(missing_ok=True)
        return None
    return target


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == PARQUET_BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (it starts with = + - @, a tab or a
    carriage return: OWASP's list) gets a leading apostrophe; numbers and other text pass unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_table(rows: Sequence[dict[str, Any]], path: Path, fmt: str) -> Path:
    """Write rows (missing values stay empty/null, never 0) as `path` with the format's suffix."""
    target = path.with_suffix(f".{fmt}")
    columns = _columns(rows)
    if fmt == "csv":
        with target.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([csv_cell(c) for c in columns])
            writer.writerows([csv_cell(row.get(c, "")) for c in columns] for row in rows)
        return target
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ExportError("Parquet export needs pyarrow (pip install pyarrow)") from exc
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    pq.write_table(table, target)
    return target


def export_tables(
    store: Store, out_dir: Path, formats: Sequence[str], devices: Sequence[str] = ()
) -> list[Path]:
    """Write the results and aggregates tables of the chosen devices (all when none) in each format,
    and their telemetry rollups where there are any. The results table holds every result, calibration
    figures included (their `family` says so); the aggregates are of measured points only."""
    chosen = list(devices) or [d["device"] for d in store.devices()]
    results = [r for d in chosen for r in labelled_point_results(store, d)]
    points = [r for r in results if not is_calibration(r)]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        written.append(write_table(result_rows(results), out_dir / "results", fmt))
        written.append(write_table(aggregate_rows(points), out_dir / "aggregates", fmt))
        telemetry = write_stream(
            rollup_rows(store, chosen), ROLLUP_COLUMNS, out_dir / "telemetry_rollups", fmt
        )
        if telemetry is not None:
            written.append(telemetry)
    return written


@click.command()
@click.option("--store", "store_url", default=None, help="sqlite:///PATH or postgresql://USER@HOST/DB.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--format", "formats", type=click.Choice(FORMATS), multiple=True, default=("csv",), show_default=True
)
@click.option("--device", "devices", multiple=True, help="Only these devices (repeatable); default: all.")
@click.option("--json", "as_json", is_flag=True, help="print the files written as JSON.")
def export(
    store_url: str | None, out_dir: Path, formats: tuple[str, ...], devices: tuple[str, ...], as_json: bool
) -> None:
    """Export stored results (per point and aggregated), and telemetry rollups, to CSV or Parquet."""
    try:
        store = open_for_reading(store_url)
    except (StoreURLError, StoreOpenError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        paths = export_tables(store, out_dir, formats, devices)
        click.echo(json.dumps({"files": [str(p) for p in paths]}) if as_json else "\n".join(map(str, paths)))
    except ExportError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
