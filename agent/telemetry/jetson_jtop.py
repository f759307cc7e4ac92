"""Jetson source through jtop (jetson-stats): rails, temperatures, RAM/swap/EMC, GPU clock, power mode.

jtop talks to the root `jtop.service`; `from jtop import jtop` works without it but `start()` raises
`JtopException`, and then detection falls back on tegrastats. The first client sets the service's
interval, and values under ~0.5 s are unreliable, so this source runs at 2 Hz at most.

Live and recorded data go through the same converter: `snapshot(jetson)` copies the properties of a
running jtop object into a plain dict shaped like their printed form (`jetson.power`,
`jetson.temperature`, `jetson.memory`, `jetson.gpu`, `jetson.nvpmodel`, `jetson.jetson_clocks`,
`jetson.board`), and `parse_snapshot()` turns that dict into metrics. Units from jetson-stats:
power mW, RAM/swap kB, EMC and GPU frequencies kHz, temperatures C (-256 when offline).
"""

from __future__ import annotations

import logging
from typing import Any

from ctxscope.agent.telemetry.base import Backend, TelemetryError, unit_of
from ctxscope.agent.telemetry.jetson_rails import classify_rail, rail_channel, total_power

log = logging.getLogger(__name__)

_KIB = 1024


def snapshot(jetson: Any) -> dict[str, Any]:
    """The jtop properties this backend reads, as plain values (what `print(jetson.X)` shows)."""
    return {
        "power": jetson.power,
        "temperature": jetson.temperature,
        "memory": jetson.memory,
        "gpu": jetson.gpu,
        "nvpmodel": str(jetson.nvpmodel) if jetson.nvpmodel is not None else None,
        "jetson_clocks": bool(jetson.jetson_clocks) if jetson.jetson_clocks is not None else None,
        "board": jetson.board,
    }


def parse_snapshot(snap: dict[str, Any]) -> tuple[dict[str, float], str | None]:
    """Metrics of one snapshot, and how its `power_w` was formed (None when there are no rails)."""
    values: dict[str, float] = {}
    power = snap.get("power") or {}
    rails_w = {
        name: r["power"] / 1000.0 for name, r in (power.get("rail") or {}).items() if r.get("online", True)
    }
    tot = power.get("tot") or {}
    if "name" in tot:  # jtop moves the input rail (VDD_IN, POM_5V_IN) out of `rail` into `tot`
        rails_w[tot["name"]] = tot["power"] / 1000.0
    for name, watts in rails_w.items():
        values[rail_channel(name)] = watts
    total = total_power(rails_w)
    if total is not None:
        values["power_w"] = total[0]
    for sensor, t in (snap.get("temperature") or {}).items():
        if t.get("online", True) and t["temp"] > -256:
            values[f"temp_{sensor.lower()}_c"] = float(t["temp"])
    memory = snap.get("memory") or {}
    if "RAM" in memory:
        values["ram_used_bytes"] = float(memory["RAM"]["used"] * _KIB)
    if "SWAP" in memory:
        values["swap_used_bytes"] = float(memory["SWAP"]["used"] * _KIB)
    emc = memory.get("EMC") or {}
    if emc.get("online"):
        values["clock_mem_mhz"] = emc["cur"] / 1000.0
        values["util_emc_pct"] = float(emc["val"])
    # jtop keys the integrated GPU by name: "gpu" with JetPack 6, the chip ("ga10b") with JetPack 5.
    gpus = snap.get("gpu") or {}
    gpu = gpus.get("gpu") or (next(iter(gpus.values())) if len(gpus) == 1 else {})
    if "freq" in gpu:
        values["clock_gpu_mhz"] = gpu["freq"]["cur"] / 1000.0
    if "status" in gpu and "load" in gpu["status"]:
        values["util_gpu_pct"] = float(gpu["status"]["load"])
    return values, None if total is None else f"jtop {total[1]}, INA3221 reading at the jtop service interval"


def static_info(snap: dict[str, Any]) -> dict[str, str]:
    """Board, JetPack, power mode and rail classes of a snapshot."""
    info: dict[str, str] = {}
    hardware = (snap.get("board") or {}).get("hardware") or {}
    for key, label in (("Model", "board"), ("Module", "module"), ("L4T", "l4t"), ("Jetpack", "jetpack")):
        if key in hardware:
            info[label] = str(hardware[key])
    if snap.get("nvpmodel") is not None:
        info["nvpmodel"] = str(snap["nvpmodel"])
    if snap.get("jetson_clocks") is not None:
        info["jetson_clocks"] = "on" if snap["jetson_clocks"] else "off"
    power = snap.get("power") or {}
    names = list(power.get("rail") or {}) + (
        [power["tot"]["name"]] if "name" in (power.get("tot") or {}) else []
    )
    for name in names:
        rail = classify_rail(name)
        info[f"rail_class.{name}"] = f"{rail.cls} ({'+'.join(rail.components)})"
    return info


class JtopBackend(Backend):
    name = "jtop"
    max_rate_hz = 2.0

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._jetson: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_jetson": None}

    def available(self) -> bool:
        try:
            self.open()
            snap = snapshot(self._jetson)
        except ImportError:
            return False
        except TelemetryError as exc:
            # jtop installed but refused: most often its service and this client differ in their minor
            # version ("Mismatch version jtop service: [x] and client: [y]"): said, not silent
            log.warning("jtop not used, %s; install the client's jetson-stats version system-wide", exc)
            return False
        finally:
            self.close()
        values, self._power_method = parse_snapshot(snap)
        self._metrics = {name: unit_of(name) for name in values}
        self._info = static_info(snap)
        return bool(self._metrics)

    def open(self) -> None:
        from jtop import JtopException, jtop

        jetson = jtop(interval=self.interval_s)
        try:
            jetson.start()
        except JtopException as exc:
            raise TelemetryError(f"jtop service: {exc}") from exc
        self._jetson = jetson

    def close(self) -> None:
        if self._jetson is not None:
            self._jetson.close()
            self._jetson = None

    def read(self) -> dict[str, float]:
        values, _ = parse_snapshot(snapshot(self._jetson))
        return {k: v for k, v in values.items() if k in self._metrics}
