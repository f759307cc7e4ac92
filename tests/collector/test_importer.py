"""`collector import`: the committed results load, imports are idempotent, bad lines are counted."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from click.testing import CliRunner

from ctxscope.collector.cli import collector
from ctxscope.collector.importer import EXIT_BAD_LINES, import_files
from ctxscope.collector.readmodel import views
from ctxscope.collector.store import Store, open_store
from tests.support import point_result, store

__all__ = ["store"]  # both backends, as the store's own tests

REPO = Path(__file__).resolve().parents[2]
STREAM = "00000000000000a1"
COMMITTED = sorted(REPO.glob("results/**/*.jsonl*"))


def _line(seq: int, device: str = "board-1") -> str:
    return point_result(device, STREAM, seq).model_dump_json()


def test_committed_results_load_and_reimport_is_idempotent(store: Store) -> None:
    assert len(COMMITTED) >= 10, "the committed results files are missing"
    first = import_files(store, COMMITTED)
    assert first.bad_lines == 0, first.examples
    assert first.stored == first.lines > 4000
    assert first.devices == {"vm", "h200"}
    assert len(store.results("vm")) > 50
    assert store.telemetry_channels("vm"), "the H200 power and temperature traces did not load"
    again = import_files(store, COMMITTED)
    assert (again.stored, again.duplicates) == (0, first.stored)
    assert store.record_count() == first.stored


def test_device_relabel(store: Store) -> None:
    files = [REPO / "results/engine/h200-call2/curves.jsonl"]
    summary = import_files(store, files, device="h200-reference")
    assert summary.devices == {"h200-reference"}
    assert len(store.results("h200-reference")) == 15
    assert store.results("vm") == []


def test_bad_lines_are_counted_and_skipped(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    bad_version = json.loads(_line(3)) | {"v": 7}
    invalid = json.loads(_line(4)) | {"context_len": "long"}
    path.write_text(
        "\n".join(
            [
                _line(1),
                "{not json",
                "[1, 2]",
                json.dumps(bad_version),
                json.dumps(invalid),
                "",
                "[" * 100_000,
                _line(2),
            ]
        )
        + "\n"
    )
    summary = import_files(store, [path])
    assert summary.stored == 2
    assert dict(summary.bad) == {"not_json": 2, "not_an_object": 1, "unsupported_version": 1, "invalid": 1}
    assert [b.line for b in summary.examples] == [2, 3, 4, 5, 7]
    assert [r["seq"] for r in store.results("board-1")] == [1, 2]


def test_truncated_gzip_keeps_the_lines_before(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    body = gzip.compress(("\n".join(_line(i) for i in range(1, 200)) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(body[: len(body) * 2 // 3])
    summary = import_files(store, [path])
    store.close()
    assert 0 < summary.stored < 199
    assert dict(summary.bad) == {"bad_gzip": 1}


def test_cli_summary_json_and_exit_codes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    good = tmp_path / "good.jsonl.gz"
    good.write_bytes(gzip.compress((_line(1) + "\n" + _line(2) + "\n").encode()))
    runner = CliRunner()
    result = runner.invoke(collector, ["import", "--store", url, "--json", str(good)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] == 2
    result = runner.invoke(collector, ["import", "--store", url, str(good)])
    assert result.exit_code == 0
    assert "0 stored, 2 already present" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_line(3) + "\nnope\n")
    result = runner.invoke(collector, ["import", "--store", url, "--json", str(bad)])
    assert result.exit_code == EXIT_BAD_LINES
    summary = json.loads(result.stdout)
    assert summary["stored"] == 1 and summary["bad_by_reason"] == {"not_json": 1}
    assert summary["bad_examples"][0]["line"] == 2
    result = runner.invoke(collector, ["import", "--help"])
    assert "Exit codes" in result.output and str(EXIT_BAD_LINES) in result.output


def test_an_imported_device_was_last_seen_at_its_newest_record(store: Store, tmp_path: Path) -> None:
    """Not when it was imported: an import is no sign of life. Older records imported later never move
    the time back; each device of a file gets its own records' time."""
    newer, older = tmp_path / "newer.jsonl", tmp_path / "older.jsonl"
    newer.write_text("\n".join([_line(10), _line(11), _line(1, "board-2"), _line(12)]) + "\n")
    older.write_text("\n".join([_line(1), _line(2)]) + "\n")
    assert import_files(store, [newer, older]).stored == 6
    store.merge_staged()  # SQLite folds its staged records' arrival into the rows
    seen = {row["device"]: row["last_seen_ns"] for row in store.devices()}
    assert seen == {
        "board-1": point_result("board-1", STREAM, 12).ts,
        "board-2": point_result("b", STREAM, 1).ts,
    }
    (summary, _) = views.fleet(store)["devices"]
    assert (summary["state"], summary["online"], summary["live"], summary["stale"]) == (
        None,
        False,
        False,
        True,
    )


def test_an_imported_record_dated_ahead_is_last_seen_no_later_than_its_import(
    store: Store, tmp_path: Path
) -> None:
    """A board whose clock ran years ahead: its imported records must not date its last-seen into the
    future (it would read as live, and fresh, for years)."""
    ahead = point_result("board-1", STREAM, 1).model_copy(update={"ts": time.time_ns() + 10**18})
    path = tmp_path / "ahead.jsonl"
    path.write_text(ahead.model_dump_json() + "\n")
    before = time.time_ns()
    assert import_files(store, [path]).stored == 1
    store.merge_staged()
    (row,) = store.devices()
    assert before <= row["last_seen_ns"] <= time.time_ns()
