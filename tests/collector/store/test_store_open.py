"""A store that cannot be opened stops `collector run` with one clear line, not a traceback."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.cli import main
from ctxscope.collector.store import StoreOpenError, open_store

COMMANDS = {
    "run": ["collector", "run", "--no-web", "--broker", "127.0.0.1:1"],
    "export": ["collector", "export", "--out", "{tmp}/out"],
    "report": ["report", "--out", "{tmp}/report"],
}


def one_line_error(store_url: str, command: str = "run", tmp: Path = Path(".")) -> str:
    args = [a.format(tmp=tmp) for a in COMMANDS[command]]
    result = CliRunner().invoke(main, [*args, "--store", store_url])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    return line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_damaged_sqlite_file(tmp_path: Path, command: str) -> None:
    db = tmp_path / "c.db"
    db.write_bytes(b"this is not a database " * 100)
    line = one_line_error(f"sqlite:///{db}", command, tmp_path)
    opened = "" if command == "run" else " read-only"  # the commands that only read
    assert line == f"Error: cannot open the SQLite store {db}{opened}: file is not a database"


@pytest.mark.parametrize("command", ["export", "report", "watch"])
def test_a_command_that_only_reads_creates_no_store(
    tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped path, or the default store where nothing was collected, is an error, not an empty
    store and an empty report with exit status 0."""
    args = {"watch": ["collector", "watch", "--once"]}.get(command) or COMMANDS[command]
    args = [a.format(tmp=tmp_path) for a in args]
    missing = tmp_path / "no" / "such" / "c.db"
    result = CliRunner().invoke(main, [*args, "--store", f"sqlite:///{missing}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == f"Error: cannot open the SQLite store {missing} read-only: no such file"
    assert not (tmp_path / "no").exists()

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    demo_store = tmp_path / "state" / "ctxscope" / "demo" / "collector.sqlite"
    assert f"the demo's store is --store sqlite:///{demo_store}" in result.output
    assert not (tmp_path / "state" / "ctxscope" / "collector.sqlite").exists()


@pytest.fixture
def immutable_db(tmp_path: Path) -> Iterator[Path]:
    """A store file nobody may write, root included (`chattr +i`: a read-only file system's effect)."""
    db = tmp_path / "c.db"
    open_store(f"sqlite:///{db}").close()
    sqlite3.connect(db).execute("PRAGMA journal_mode=DELETE").close()  # leave no -wal/-shm files
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(db), str(tmp_path)]).returncode:
        pytest.skip("chattr +i is not available here")
    yield db
    subprocess.run(["chattr", "-i", str(db), str(tmp_path)], check=True)


def test_a_read_only_sqlite_file(immutable_db: Path) -> None:
    line = one_line_error(f"sqlite:///{immutable_db}")
    assert line.startswith(f"Error: cannot open the SQLite store {immutable_db}: ")
    assert "readonly" in line or "unable to open" in line


def test_an_unreachable_postgresql_server() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreOpenError) as caught:
        open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert "\n" not in str(caught.value) and "cannot open the PostgreSQL store" in str(caught.value)
