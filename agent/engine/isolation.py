"""Parent side of the child processes that run points and probes.

A `Worker` starts `python -m ctxscope.agent.engine.worker`, sends it typed jobs (`protocol.py`) and
waits for each outcome with a timeout. Outcomes: the child's own (its job's success, or oom / fault),
`timeout` (the child is killed), `fault` when the child dies (by a signal or an exit code) without
replying, with the tail of its stderr as the error text, or `fault` when its reply is malformed
(the child, in a state nobody knows, is killed). On unified-memory devices (Jetson) the Linux OOM killer may
act before CUDA reports out of memory: there a SIGKILL, or swap that grows beyond a limit while a
job runs, counts as `oom` with its reason.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psutil

from ctxscope.agent.engine.outcome import Failure
from ctxscope.agent.engine.protocol import REPLY_MARK, Job, MalformedReply, R, read_reply

_STDERR_TAIL_BYTES = 4000
_POLL_S = 0.2


def is_unified_memory_device() -> bool:
    """A Jetson (Tegra) board, where GPU and CPU share RAM and swap."""
    return Path("/etc/nv_tegra_release").exists()


@dataclass(frozen=True)
class HostMemoryWatch:
    """Treat swap growth beyond `swap_growth_limit_bytes` during a job as out of memory."""

    swap_growth_limit_bytes: int = 512 * 1024**2


class Worker:
    """One child process; `request` sends a job and returns its outcome: the expected success or a
    Failure."""

    argv: ClassVar[list[str]] = [sys.executable, "-m", "ctxscope.agent.engine.worker"]

    def __init__(
        self, *, env: dict[str, str] | None = None, host_watch: HostMemoryWatch | None = None
    ) -> None:
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.host_watch = host_watch
        self.unified = is_unified_memory_device()
        self.proc: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        # Lives as long as the worker (closed in close()), so no with-block.
        self._stderr = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=self.env,
            # `python -m` puts the working directory first on sys.path; a source checkout there would
            # shadow the installed package, so the child starts in a neutral directory.
            cwd=tempfile.gettempdir(),
            # A process group of its own: a kill reaches the processes the child started too
            # (compile workers, a hung helper), which would otherwise live on, reparented.
            start_new_session=True,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:  # closed at the child's end of output, whoever ended it
            for line in proc.stdout:
                if line.startswith(REPLY_MARK):
                    self._replies.put(line[len(REPLY_MARK) :])
        self._replies.put(None)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, job: Job, expected: type[R], timeout_s: float) -> R | Failure:
        """Send `job` and wait for its outcome, whose success is `expected`."""
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        started = time.monotonic()
        swap_start = psutil.swap_memory().used if self.host_watch else 0
        try:
            self.proc.stdin.write(job.model_dump_json() + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._died(started)
        while True:
            try:
                line = self._replies.get(timeout=_POLL_S)
            except queue.Empty:
                elapsed = time.monotonic() - started
                if elapsed > timeout_s:
                    self.kill()
                    return Failure(
                        outcome="timeout", error=f"no reply within {timeout_s:g} s", wall_s=elapsed
                    )
                if self.host_watch is not None:
                    grown = psutil.swap_memory().used - swap_start
                    limit = self.host_watch.swap_growth_limit_bytes
                    if grown > limit:
                        self.kill()
                        error = f"swap grew by {grown} B (> {limit} B) on unified memory"
                        return Failure(outcome="oom", error=error, wall_s=elapsed)
                continue
            if line is None:
                return self._died(started)
            try:
                reply = read_reply(line, expected)
            except MalformedReply as exc:  # a child that says what nobody expects is in an unknown state
                self.kill()
                return Failure(outcome="fault", error=str(exc), wall_s=time.monotonic() - started)
            reply.wall_s = time.monotonic() - started
            if isinstance(reply, Failure) and reply.outcome != "oom":
                # the child exits after replying a fault: wait for it, so `alive` is false at once and the
                # next job goes to a fresh worker instead of to this one on its way out
                self._reap()
            return reply

    def _died(self, started: float) -> Failure:
        assert self.proc is not None
        code = self.proc.wait()
        tail = self.stderr_tail()
        wall_s = time.monotonic() - started
        if code < 0:
            name = signal.Signals(-code).name
            if -code == signal.SIGKILL and self.unified:
                what = f"killed by {name} (the Linux OOM killer on unified memory)"
                return Failure(outcome="oom", error=f"{what}; stderr: {tail}", wall_s=wall_s)
            what = f"child died by {name}"
        else:
            what = f"child exited with code {code}"
        return Failure(outcome="fault", error=f"{what}; stderr: {tail}", wall_s=wall_s)

    def stderr_tail(self) -> str:
        self._stderr.flush()
        size = self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(size - _STDERR_TAIL_BYTES, 0))
        return self._stderr.read().decode(errors="replace").strip()

    def _reap(self, timeout_s: float = 30.0) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._kill_group()
            self.proc.kill()
            self.proc.wait()

    def _kill_group(self) -> None:
        """SIGKILL whatever is left of the child's process group (the child and what it started)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.proc is not None:
            # closed also when the child already died or was killed, so no pipe outlives the worker
            if self.proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    self.proc.stdin.close()
            if self.proc.poll() is None:
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.kill()
            self._kill_group()  # helpers the child left behind when it ended
            self.proc = None
        self._stderr.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
