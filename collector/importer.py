"""Offline import: JSON-lines record files (plain or gzip) into the collector's store.

`ctxscope agent run --out FILE` and `ctxscope agent profile --out FILE` write one contract message per
line. A board without a network, or a run made elsewhere (the committed H200 results), reaches the
collector by importing such files. Every line is validated against the same contract as the live
ingest and written through the same store API, so the (device, stream, seq) key makes an import
idempotent: importing a file twice stores nothing the second time and counts duplicates. A bad line
(not JSON, wrong schema version, invalid fields, a value the database refuses) is counted with its
reason and location and skipped; it never aborts the import. A truncated gzip stream ends that file
with a counted error; the lines before it are kept.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import click
from pydantic import ValidationError

from ctxscope.collector.store import Accepted, BatchOutcome, Store
from ctxscope.shared.ids import InvalidIdentifier, validate_device_id
from ctxscope.shared.messages import CHANNEL_OF_KIND, MESSAGE_ADAPTER, Message
from ctxscope.shared.topics import topic_for

GZIP_MAGIC = b"\x1f\x8b"
BATCH_LINES = 500
MAX_LINE_BYTES = 8 * 1024 * 1024
EXAMPLES_KEPT = 20

# Progress callback: bytes of the file read so far (compressed bytes for gzip files).
ByteProgress = Callable[[int], None]


class LineError(ValueError):
    """A line that is not a valid contract message; `reason` is a short machine-friendly tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class BadLine:
    """Where a bad line was and why it was skipped."""

    path: str
    line: int
    reason: str
    detail: str


@dataclass
class ImportSummary:
    """What an import did: lines read, records stored or already present, and what was skipped."""

    files: int = 0
    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    state_applied: int = 0
    state_stale: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    examples: list[BadLine] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)

    @property
    def bad_lines(self) -> int:
        return sum(self.bad.values())

    def skip(self, where: BadLine) -> None:
        self.bad[where.reason] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(where)

    def add(self, outcome: BatchOutcome) -> None:
        self.stored += outcome.stored
        self.duplicates += outcome.duplicates
        self.state_applied += outcome.state_applied
        self.state_stale += outcome.state_stale
        self.devices |= outcome.devices

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "state_applied": self.state_applied,
            "state_stale": self.state_stale,
            "bad_lines": self.bad_lines,
            "bad_by_reason": dict(sorted(self.bad.items())),
            "bad_examples": [vars(b) for b in self.examples],
            "devices": sorted(self.devices),
        }


def parse_line(line: bytes, device: str | None = None) -> Message:
    """One JSON line -> a validated contract message (relabelled to `device` when given)."""
    if len(line) > MAX_LINE_BYTES:
        raise LineError("too_large", f"{len(line)} bytes > {MAX_LINE_BYTES}")
    try:
        raw = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LineError("not_json", str(exc)) from exc
    except RecursionError as exc:
        raise LineError("not_json", "nested too deeply") from exc
    if not isinstance(raw, dict):
        raise LineError("not_an_object", f"top level is {type(raw).__name__}")
    if raw.get("v") != 1:
        raise LineError("unsupported_version", f"schema version {raw.get('v')!r}")
    try:
        message = MESSAGE_ADAPTER.validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise LineError("invalid", f"{where}: {first.get('msg')} ({exc.error_count()} errors)") from exc
    if device is not None and device != message.device:
        message = message.model_copy(update={"device": device})
    return message


def _accepted(message: Message) -> Accepted:
    return Accepted(topic_for(message.device, CHANNEL_OF_KIND[message.kind]), message)


# What reading a damaged gzip record file raises (a truncated stream, a bad header or checksum).
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def open_record_file(path: Path) -> tuple[BinaryIO, BinaryIO | gzip.GzipFile]:
    """(the raw file, for progress; the stream of lines, gunzipped when the file is gzip)."""
    raw = path.open("rb")
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    raw.seek(0)
    return raw, raw


def _numbered_lines(
    path: Path, summary: ImportSummary, progress: ByteProgress | None
) -> Iterator[tuple[int, bytes]]:
    raw, stream = open_record_file(path)
    number = 0
    with raw, stream:
        try:
            for number, line in enumerate(stream, start=1):
                if progress is not None:
                    progress(raw.tell())
                if line.strip():
                    yield number, line
        except GZIP_ERRORS as exc:
            summary.skip(BadLine(str(path), number + 1, "bad_gzip", f"{type(exc).__name__}: {exc}"))


class Importer:
    """Imports files into one store, in batches of one transaction each."""

    def __init__(self, store: Store, *, device: str | None = None, batch_lines: int = BATCH_LINES) -> None:
        if device is not None:
            validate_device_id(device)
        self.store = store
        self.device = device
        self.batch_lines = batch_lines
        self.summary = ImportSummary()

    def import_file(self, path: Path, progress: ByteProgress | None = None) -> None:
        """Import one file; bad lines are counted in `summary`, never raised."""
        self.summary.files += 1
        batch: list[tuple[int, Message]] = []
        for number, line in _numbered_lines(path, self.summary, progress):
            self.summary.lines += 1
            try:
                batch.append((number, parse_line(line, self.device)))
            except (LineError, InvalidIdentifier) as exc:
                reason = exc.reason if isinstance(exc, LineError) else "bad_device"
                detail = exc.detail if isinstance(exc, LineError) else str(exc)
                self.summary.skip(BadLine(str(path), number, reason, detail))
                continue
            if len(batch) >= self.batch_lines:
                self._write(path, batch)
                batch = []
        if batch:
            self._write(path, batch)

    def _write(self, path: Path, batch: list[tuple[int, Message]]) -> None:
        """Each device's lines of the batch, received at their newest record's own time: an imported
        device was last seen when it made its records, not when they were imported."""
        by_device: dict[str, list[tuple[int, Message]]] = {}
        for number, message in batch:
            by_device.setdefault(message.device, []).append((number, message))
        for lines in by_device.values():
            self._write_device(path, lines)

    def _write_device(self, path: Path, batch: list[tuple[int, Message]]) -> None:
        """One transaction for the lines; if the database refuses it, line by line, so one refused
        record (say, a string PostgreSQL cannot hold) is skipped alone. A busy or unreachable
        database is not a bad line: that error propagates."""
        received = max(m.ts for _, m in batch)
        try:
            self.summary.add(self.store.write_batch([_accepted(m) for _, m in batch], received))
            return
        except Exception as exc:
            if self.store.is_transient(exc):
                raise
        for number, message in batch:
            try:
                self.summary.add(self.store.write_batch([_accepted(message)], message.ts))
            except Exception as exc:
                if self.store.is_transient(exc):
                    raise
                detail = f"{type(exc).__name__}: {exc}"[:500]
                self.summary.skip(BadLine(str(path), number, "store_error", detail))


def import_files(
    store: Store,
    paths: Iterable[Path],
    *,
    device: str | None = None,
    progress: Callable[[Path], ByteProgress | None] | None = None,
) -> ImportSummary:
    """Import every file into `store`; `progress(path)` may return a per-file byte-count callback."""
    importer = Importer(store, device=device)
    for path in paths:
        importer.import_file(path, progress(path) if progress is not None else None)
    return importer.summary


EXIT_OK = 0
EXIT_BAD_LINES = 3

IMPORT_EPILOG = f"""\b
Exit codes:
  {EXIT_OK}  every line was imported (or was already in the store)
  1  the store could not be opened or written (nothing after the failing batch was imported)
  2  usage error (unknown option, missing file)
  {EXIT_BAD_LINES}  some lines were skipped as bad (see the summary); all good lines were imported
"""


@click.command("import", epilog=IMPORT_EPILOG)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--store", "store_url", default=None, help="sqlite:///PATH or postgresql://USER@HOST/DB.")
@click.option(
    "--device",
    default=None,
    help="store the records under this device id instead of the one in each line (e.g. h200-reference).",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar.")
def import_command(
    files: tuple[Path, ...], store_url: str | None, device: str | None, as_json: bool, quiet: bool
) -> None:
    """Import JSON-lines record FILES (plain or gzip, as written by `agent run --out`) into the store.

    Idempotent: records already stored (same device, stream and seq) are counted as duplicates.
    Bad lines are counted by reason and skipped; they never stop the import."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from ctxscope.collector.settings import default_store_url
    from ctxscope.collector.store import open_store

    url = store_url or default_store_url()
    try:
        if device is not None:
            validate_device_id(device)
        store = open_store(url)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )

    def per_file(path: Path) -> ByteProgress:
        task = bar.add_task(path.name, total=path.stat().st_size)
        return lambda done: bar.update(task, completed=done)

    try:
        with bar:
            summary = import_files(store, files, device=device, progress=per_file)
    except Exception as exc:
        raise click.ClickException(f"{url}: {type(exc).__name__}: {exc}") from exc
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        _print_summary(summary, url)
    if summary.bad_lines:
        sys.exit(EXIT_BAD_LINES)


def _print_summary(summary: ImportSummary, url: str) -> None:
    click.echo(
        f"imported {summary.files} file(s), {summary.lines} lines into {url}: {summary.stored} stored, "
        f"{summary.duplicates} already present, {summary.state_applied + summary.state_stale} state, "
        f"{summary.bad_lines} bad; devices: {', '.join(sorted(summary.devices)) or 'none'}"
    )
    for reason, count in sorted(summary.bad.items()):
        click.echo(f"  {count} bad line(s): {reason}")
    for bad in summary.examples:
        click.echo(f"  {bad.path}:{bad.line}: {bad.reason}: {bad.detail}")
