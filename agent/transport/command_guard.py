"""Which commands the agent may run: fresh, bounded in time, never retained, each id at most once.

Who may send a command is the broker's job (its ACL lets only the collector and operator identities
write `cmd/` topics, over TLS); this guard covers what an authorized sender's message can still get
wrong or what a recorded one can be replayed for. The ids already admitted live in a table of the
spool's SQLite database, so a replay after a restart is refused too. A row is kept while it is among the
newest KEEP_IDS ids or its command has not long expired: the expiry refuses a replay only while the
board's clock does not step back, and a clock that ran ahead (a bad RTC, a wrong NTP answer) and was
set right would otherwise make an admitted command look fresh once its id was gone.
Where the spool wrote its database back to its path (its file was deleted under the running agent), the
guard connects to the file now there, which holds the ids it had recorded.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, NamedTuple

from ctxscope.agent.transport.spool import file_identity
from ctxscope.shared.messages import MAX_COMMAND_TTL_S, Command

CLOCK_SKEW_S = 60.0  # tolerated difference between the collector's and the device's clocks
# Admitted ids kept whatever the clock says: years of commands at a few a day, a few MB at most.
KEEP_IDS = 10_000


class Refusal(NamedTuple):
    """Why a command is not run: a kind from a fixed set (counted and rate-limited by it) and the text
    that goes back to the sender."""

    kind: Literal["retained", "expired", "far_future", "unrecorded", "replay"]
    reason: str

    def __str__(self) -> str:
        return self.reason


def _clock_hint(command: Command, now_ns: int) -> str:
    """Where the device's clock and the sender's (the command's `ts`) disagree beyond the skew allowed,
    the likelier cause of an expiry refusal: a board without a set clock (no network time, a flat RTC
    battery) refuses every command until its clock is right."""
    behind_s = (command.ts - now_ns) / 1e9
    if abs(behind_s) <= CLOCK_SKEW_S:
        return ""
    reads = datetime.fromtimestamp(now_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    side = "behind" if behind_s > 0 else "ahead of"
    return (
        f"; this device's clock reads {reads}, {abs(behind_s):.0f} s {side} the sender's: set it"
        " (network time) and commands are accepted again"
    )


class CommandGuard:
    """`admit(command, retained)` returns None for a command to run, else the reason it is refused."""

    def __init__(self, database: Path, max_ttl_s: float = MAX_COMMAND_TTL_S) -> None:
        self.max_ttl_ns = int(max_ttl_s * 1e9)
        self._lock = threading.Lock()
        self.database = database
        self._connect()

    def _connect(self) -> None:
        self._db = sqlite3.connect(
            str(self.database), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._file = file_identity(self.database)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS commands_seen"
            " (command_id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL, seen_at INTEGER NOT NULL)"
        )

    def admit(self, command: Command, retained: bool, now_ns: int | None = None) -> Refusal | None:
        now = time.time_ns() if now_ns is None else now_ns
        if retained:
            return Refusal(
                "retained",
                "a retained command is never run (commands are sent once, not stored by the broker)",
            )
        if command.expires_at < now:
            return Refusal(
                "expired", f"expired {(now - command.expires_at) / 1e9:.1f} s ago{_clock_hint(command, now)}"
            )
        horizon = self.max_ttl_ns + int(CLOCK_SKEW_S * 1e9)
        if command.expires_at - now > horizon:
            return Refusal(
                "far_future",
                f"expires {(command.expires_at - now) / 1e9:.0f} s from now; at most "
                f"{self.max_ttl_ns / 1e9:.0f} s (+{CLOCK_SKEW_S:.0f} s clock skew) is accepted"
                f"{_clock_hint(command, now)}",
            )
        try:
            with self._lock:
                if file_identity(self.database) not in (self._file, None):  # written back by the spool
                    self._db.close()
                    self._connect()
                self._db.execute(
                    "DELETE FROM commands_seen WHERE expires_at < ?"
                    " AND rowid <= (SELECT MAX(rowid) FROM commands_seen) - ?",
                    (now - horizon, KEEP_IDS),
                )
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO commands_seen VALUES (?, ?, ?)",
                    (command.command_id, command.expires_at, now),
                ).rowcount
        except (sqlite3.Error, OSError) as exc:
            # fail closed: a command whose id cannot be recorded could run twice
            return Refusal("unrecorded", f"the agent cannot record command ids ({exc}); not run")
        if not inserted:
            return Refusal("replay", f"command id {command.command_id} was already received once (a replay)")
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
