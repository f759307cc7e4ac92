"""The agent's CommandGuard on its own: bounds in time, retained, at most once across restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ctxscope.agent.transport import command_guard
from ctxscope.agent.transport.command_guard import CommandGuard
from ctxscope.agent.transport.spool import Spool
from ctxscope.shared.messages import Command, Log

NOW = 1_800_000_000 * 10**9
S = 10**9


def command(command_id: str, expires_at: int) -> Command:
    return Command(
        device="d-1", stream="00000000000000cc", seq=1, ts=NOW, command_id=command_id, name="run_plan",
        expires_at=expires_at,
    )  # fmt: skip


def test_each_rule_and_its_reason(tmp_path: Path) -> None:
    guard = CommandGuard(tmp_path / "spool.sqlite")
    assert guard.admit(command("ok", NOW + 600 * S), retained=False, now_ns=NOW) is None
    refusals = {
        "retained": guard.admit(command("r", NOW + 600 * S), retained=True, now_ns=NOW),
        "expired": guard.admit(command("e", NOW - 1), retained=False, now_ns=NOW),
        "far": guard.admit(command("f", NOW + 3661 * S), retained=False, now_ns=NOW),
        "replay": guard.admit(command("ok", NOW + 600 * S), retained=False, now_ns=NOW + S),
    }
    assert "retained" in str(refusals["retained"])
    assert "expired 0.0 s ago" in str(refusals["expired"])
    assert "at most 3600 s" in str(refusals["far"])
    assert "already received once" in str(refusals["replay"])
    assert [r.kind for r in refusals.values() if r] == ["retained", "expired", "far_future", "replay"]
    assert guard.admit(command("skew", NOW + 3650 * S), retained=False, now_ns=NOW) is None  # clock skew
    guard.close()


def test_a_refusal_by_time_names_a_device_clock_that_disagrees_with_the_sender(tmp_path: Path) -> None:
    """A board whose clock is a year behind (no network time, a flat RTC battery) refuses every command
    as too far in the future; the reason says the clock is the cause, not the sender."""
    guard = CommandGuard(tmp_path / "spool.sqlite")
    year_s = 365 * 86400
    behind = guard.admit(command("b", NOW + 600 * S), retained=False, now_ns=NOW - year_s * S)
    assert behind is not None and behind.kind == "far_future"
    assert f"this device's clock reads 2026-01-15 08:00:00 UTC, {year_s} s behind the sender's" in str(behind)
    ahead = guard.admit(command("a", NOW + 600 * S), retained=False, now_ns=NOW + 7200 * S)
    assert ahead is not None and ahead.kind == "expired" and "7200 s ahead of the sender's" in str(ahead)
    # within the skew allowed, the reason is the command's own
    late = guard.admit(command("l", NOW - S), retained=False, now_ns=NOW + 30 * S)
    assert late is not None and "clock" not in str(late)
    guard.close()


def test_ids_persist_across_restarts_and_are_pruned_only_when_old_by_count_and_by_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command_guard, "KEEP_IDS", 1)
    path = tmp_path / "spool.sqlite"
    first = CommandGuard(path)
    assert first.admit(command("c1", NOW + 60 * S), retained=False, now_ns=NOW) is None
    first.close()
    second = CommandGuard(path)
    assert "already received" in str(second.admit(command("c1", NOW + 60 * S), retained=False, now_ns=NOW))
    # expired, but not by more than the longest lifetime and the skew: kept
    assert second.admit(command("c2", NOW + 200 * S), retained=False, now_ns=NOW + 100 * S) is None
    assert _seen(path) == ["c1", "c2"]
    # long expired and no longer among the newest KEEP_IDS: pruned (the expiry alone refuses a replay)
    late = NOW + 4000 * S
    assert second.admit(command("c3", late + 60 * S), retained=False, now_ns=late) is None
    assert _seen(path) == ["c2", "c3"]
    second.close()


def test_a_clock_stepped_back_does_not_let_a_command_run_twice(tmp_path: Path) -> None:
    """A board whose clock ran an hour ahead and was then set right: the id admitted before the step
    is still known, so the command, fresh again by the corrected clock, is refused as a replay."""
    guard = CommandGuard(tmp_path / "spool.sqlite")
    assert guard.admit(command("a", NOW + 600 * S), retained=False, now_ns=NOW) is None
    ahead = NOW + 3600 * S
    assert guard.admit(command("b", ahead + 600 * S), retained=False, now_ns=ahead) is None
    refusal = guard.admit(command("a", NOW + 600 * S), retained=False, now_ns=NOW + S)
    assert refusal is not None and refusal.kind == "replay"
    guard.close()


def _seen(path: Path) -> list[str]:
    rows = (
        sqlite3.connect(path).execute("SELECT command_id FROM commands_seen ORDER BY command_id").fetchall()
    )
    return [row[0] for row in rows]


def test_a_database_error_refuses_the_command(tmp_path: Path) -> None:
    guard = CommandGuard(tmp_path / "spool.sqlite")
    guard._db.execute("DROP TABLE commands_seen")
    refusal = guard.admit(command("c", NOW + 60 * S), retained=False, now_ns=NOW)
    assert (
        refusal is not None and refusal.kind == "unrecorded" and "cannot record command ids" in str(refusal)
    )
    guard.close()


def test_ids_survive_a_spool_file_deleted_under_the_running_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids live in the spool's database: once the spool has written itself back to its path, the
    guard records into that file, so a command admitted after the deletion is refused after a restart."""
    monkeypatch.setattr("ctxscope.agent.transport.spool.FILE_CHECK_EVERY_S", 0.0)
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, "d-1")
    guard = CommandGuard(path)
    assert guard.admit(command("before", NOW + 600 * S), retained=False, now_ns=NOW) is None
    path.unlink()
    spool.emit(Log, level="info", message="the write that notices")
    assert guard.admit(command("after", NOW + 600 * S), retained=False, now_ns=NOW) is None
    guard.close()
    spool.close()
    restarted = CommandGuard(path)
    for command_id in ("before", "after"):
        refusal = restarted.admit(command(command_id, NOW + 600 * S), retained=False, now_ns=NOW + S)
        assert refusal is not None and refusal.kind == "replay", command_id
    restarted.close()
