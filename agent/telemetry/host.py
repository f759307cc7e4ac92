"""The host's CPU and RAM through psutil; present on every machine, so detection always has a source.

It plays the zeus "null backend" role: a session always samples something, and power metrics are
simply absent where the host exposes none.
"""

from __future__ import annotations

import psutil

from ctxscope.agent.telemetry.base import Backend, unit_of


class HostBackend(Backend):
    name = "host"
    max_rate_hz = 100.0

    def available(self) -> bool:
        self._metrics = {name: unit_of(name) for name in self._sample()}
        return True

    def info(self) -> dict[str, str]:
        return {
            "cpu_count": str(psutil.cpu_count(logical=True)),
            "ram_total_bytes": str(psutil.virtual_memory().total),
        }

    def open(self) -> None:
        psutil.cpu_percent(interval=None)  # the first call only sets the reference point

    def read(self) -> dict[str, float]:
        return {k: v for k, v in self._sample().items() if k in self._metrics}

    @staticmethod
    def _sample() -> dict[str, float]:
        values = {
            "util_cpu_pct": float(psutil.cpu_percent(interval=None)),
            "ram_used_bytes": float(psutil.virtual_memory().used),
            "swap_used_bytes": float(psutil.swap_memory().used),
        }
        freq = psutil.cpu_freq()
        if freq is not None and freq.current > 0:
            values["clock_cpu_mhz"] = float(freq.current)
        return values
