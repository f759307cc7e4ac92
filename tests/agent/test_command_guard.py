"""The agent's CommandGuard on its own: bounds in time, retained, at most once across restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ctxscope.agent.transport.command_guard import CommandGuard
from ctxscope.shared.messages import Command

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


def test_ids_persist_across_restarts_until_their_command_expires(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    first = CommandGuard(path)
    assert first.admit(command("c1", NOW + 60 * S), retained=False, now_ns=NOW) is None
    first.close()
    second = CommandGuard(path)
    assert "already received" in str(second.admit(command("c1", NOW + 60 * S), retained=False, now_ns=NOW))
    # after expiry the row is pruned (the expiry alone refuses a replay then)
    assert second.admit(command("c2", NOW + 200 * S), retained=False, now_ns=NOW + 100 * S) is None
    rows = sqlite3.connect(path).execute("SELECT command_id FROM commands_seen").fetchall()
    assert rows == [("c2",)]
    second.close()


def test_a_database_error_refuses_the_command(tmp_path: Path) -> None:
    guard = CommandGuard(tmp_path / "spool.sqlite")
    guard._db.execute("DROP TABLE commands_seen")
    refusal = guard.admit(command("c", NOW + 60 * S), retained=False, now_ns=NOW)
    assert (
        refusal is not None and refusal.kind == "unrecorded" and "cannot record command ids" in str(refusal)
    )
    guard.close()
