"""Jetson fallback source: the text lines of NVIDIA's `tegrastats`, used when jtop is not running.

Line format (Jetson Linux developer guide, "tegrastats Utility"; JetPack 5/6 shown):
`RAM 775/7620MB (lfb 3x4MB) SWAP 0/3810MB ... GR3D_FREQ 0%@[305] cpu@48.4C gpu@48.5C tj@49.1C
VDD_IN 4761mW/4778mW VDD_CPU_GPU_CV 515mW/501mW VDD_SOC 1428mW/1428mW`. Each rail prints
instantaneous/average (newer releases add a third, peak, value); older releases omit `mW`.
Temperatures of -256 C mark a powered-off sensor and are dropped. `NC` rails are unconnected.

The live backend runs the tool as a child process and parses every line the moment it arrives;
tests run the same backend over a command that replays recorded lines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence

from ctxscope.agent.telemetry.base import Backend, unit_of
from ctxscope.agent.telemetry.jetson_rails import rail_channel, total_power

_MIB = 1024 * 1024
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/\d+mW(?:/\d+mW)?")
_LEGACY_RAIL = re.compile(r"\b((?:VDD|POM|VIN)_[A-Z0-9_]+) (\d+)/\d+\b")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_OFFLINE_C = -256.0


def parse_line(line: str) -> tuple[dict[str, float], str | None]:
    """Metrics of one tegrastats line, and how its `power_w` was formed (None without rails)."""
    values: dict[str, float] = {}
    rails_mw = {m[1]: float(m[2]) for m in _RAIL.finditer(line) if m[1] != "NC"}
    if not rails_mw:
        rails_mw = {m[1]: float(m[2]) for m in _LEGACY_RAIL.finditer(line)}
    for name, mw in rails_mw.items():
        values[rail_channel(name)] = mw / 1000.0
    total = total_power({n: mw / 1000.0 for n, mw in rails_mw.items()})
    if total is not None:
        values["power_w"] = total[0]
    for temp in _TEMP.finditer(line):
        celsius = float(temp[2])
        if celsius > _OFFLINE_C:
            values[f"temp_{temp[1].lower()}_c"] = celsius
    if ram := _RAM.search(line):
        values["ram_used_bytes"] = float(int(ram[1]) * _MIB)
    if swap := _SWAP.search(line):
        values["swap_used_bytes"] = float(int(swap[1]) * _MIB)
    if gr3d := _GR3D.search(line):
        values["util_gpu_pct"] = float(gr3d[1])
        if gr3d[2] is not None:
            values["clock_gpu_mhz"] = float(gr3d[2])
    if emc := _EMC.search(line):
        values["util_emc_pct"] = float(emc[1])
        if emc[2] is not None:
            values["clock_mem_mhz"] = float(emc[2])
    return values, None if total is None else f"tegrastats {total[1]}, instantaneous INA3221 reading"


class TegrastatsBackend(Backend):
    """Runs `tegrastats --interval <ms>` (or a given command) and parses its lines."""

    name = "tegrastats"
    max_rate_hz = 20.0

    def __init__(self, interval_ms: int = 100, command: Sequence[str] | None = None) -> None:
        self.interval_ms = interval_ms
        self.command = list(command) if command else ["tegrastats", "--interval", str(interval_ms)]
        super().__init__()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        # Pickled to the sampler process before open(): the child process and lock stay behind.
        keep = ("interval_ms", "command", "_metrics", "_info", "_power_method")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._proc, self._reader, self._lines, self._lock = None, None, [], threading.Lock()

    def available(self) -> bool:
        if shutil.which(self.command[0]) is None:
            return False
        try:
            self.open()
            deadline = time.monotonic() + max(3.0, 3 * self.interval_ms / 1000)
            while time.monotonic() < deadline and not self._lines:
                time.sleep(0.01)
            lines = self._take()
        except OSError:
            return False
        finally:
            self.close()
        if not lines:
            return False
        values, self._power_method = parse_line(lines[0][1])
        self._metrics = {name: unit_of(name) for name in values}
        return bool(self._metrics)

    def open(self) -> None:
        self._proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
        self._reader = threading.Thread(target=self._pump, args=(self._proc,), daemon=True)
        self._reader.start()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stamp = time.monotonic_ns()
            with self._lock:
                self._lines.append((stamp, line))

    def _take(self) -> list[tuple[int, str]]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines

    def read(self) -> dict[str, float]:
        lines = self._take()
        return self._known(parse_line(lines[-1][1])[0]) if lines else {}

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        return [(stamp, self._known(parse_line(line)[0])) for stamp, line in self._take()]

    def _known(self, values: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in values.items() if k in self._metrics}
