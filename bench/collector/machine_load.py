"""What the machine carried during a benchmark window: load average, whole-machine CPU, and the CPU
(100% = one core) and resident memory of each named process, plus every `postgres` process on the
host (a shared server: its figure includes other users' queries). One sample a second, kept raw and
summarised as percentiles."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil
from bench_live import percentiles


class LoadSampler:
    def __init__(self, roles: dict[str, psutil.Process], interval_s: float = 1.0) -> None:
        self.roles = roles
        self.interval_s = interval_s
        self.measuring = False
        self.stopped = False
        self.samples: dict[str, list[float]] = {
            "loadavg_1m": [],
            "machine_cpu_pct": [],
            "postgres_cpu_pct": [],
        }
        for role in roles:
            self.samples[f"{role}_cpu_pct"] = []
            self.samples[f"{role}_rss_mib"] = []
        self._postgres: dict[int, psutil.Process] = {}
        self.loadavg_before = os.getloadavg()

    def _postgres_cpu(self) -> float:
        total = 0.0
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == "postgres" and proc.pid not in self._postgres:
                self._postgres[proc.pid] = proc
                proc.cpu_percent(None)
        for pid, proc in list(self._postgres.items()):
            try:
                total += proc.cpu_percent(None)
            except psutil.Error:
                del self._postgres[pid]
        return total

    def run(self) -> None:
        psutil.cpu_percent(None)
        for proc in self.roles.values():
            proc.cpu_percent(None)
        self._postgres_cpu()
        while not self.stopped:
            time.sleep(self.interval_s)
            machine, postgres = psutil.cpu_percent(None), self._postgres_cpu()
            rows = {
                "loadavg_1m": os.getloadavg()[0],
                "machine_cpu_pct": machine,
                "postgres_cpu_pct": postgres,
            }
            for role, proc in self.roles.items():
                try:
                    rows[f"{role}_cpu_pct"] = proc.cpu_percent(None)
                    rows[f"{role}_rss_mib"] = proc.memory_info().rss / 2**20
                except psutil.Error:  # the process ended (the load, after the window)
                    continue
            if self.measuring:
                for key, value in rows.items():
                    self.samples[key].append(value)

    def summary(self) -> dict[str, Any]:
        self.stopped = True
        result: dict[str, Any] = {key: percentiles(values) for key, values in self.samples.items()}
        result["loadavg_before_1_5_15m"] = list(self.loadavg_before)
        result["loadavg_after_1_5_15m"] = list(os.getloadavg())
        return result
