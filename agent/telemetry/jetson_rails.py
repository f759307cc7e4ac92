"""Jetson power rails: what each INA3221 rail measures, and which power is the board's total.

Rail sets differ by module (NVIDIA's Jetson Linux power guide; jetson-stats `power.py`):
- Orin NX / Orin Nano: `VDD_IN` (module input, the true total), `VDD_CPU_GPU_CV`, `VDD_SOC`.
- AGX Orin: `VDD_GPU_SOC`, `VDD_CPU_CV`, `VIN_SYS_5V0` (carrier 5 V I/O, not the module),
  `VDDQ_VDD2_1V8AO` (DRAM); there is no module-input rail.
- Older modules: `POM_5V_IN` / `VDD_IN` totals.

The class is the main consumer on the rail: total / gpu / cpu / soc / memory / io. Combined rails
name their components in `components`, so a report can say that "gpu" on an Orin NX also holds
the CPU and the vision accelerators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass(frozen=True)
class Rail:
    name: str
    cls: str
    components: tuple[str, ...]


_KNOWN: dict[str, tuple[str, tuple[str, ...]]] = {
    "VDD_IN": ("total", ("module",)),
    "POM_5V_IN": ("total", ("module",)),
    "VDD_CPU_GPU_CV": ("gpu", ("cpu", "gpu", "cv")),
    "VDD_GPU_SOC": ("gpu", ("gpu", "soc")),
    "VDD_CPU_CV": ("cpu", ("cpu", "cv")),
    "VDD_SOC": ("soc", ("soc",)),
    "VDDQ_VDD2_1V8AO": ("memory", ("dram", "always-on")),
    "VIN_SYS_5V0": ("io", ("carrier-5v",)),
    "POM_5V_GPU": ("gpu", ("gpu",)),
    "POM_5V_CPU": ("cpu", ("cpu",)),
}


def classify_rail(name: str) -> Rail:
    """The class of a rail by its raw name; unknown rails fall back on words in the name."""
    if name in _KNOWN:
        cls, components = _KNOWN[name]
        return Rail(name, cls, components)
    upper = name.upper()
    for word, cls in (("GPU", "gpu"), ("CPU", "cpu"), ("SOC", "soc"), ("DDR", "memory"), ("VDDQ", "memory")):
        if word in upper:
            return Rail(name, cls, (cls,))
    return Rail(name, "io", ("unknown",))


def rail_channel(name: str) -> str:
    return f"rail_{name}_w"


def total_power(rails_w: Mapping[str, float]) -> tuple[float, str] | None:
    """The board's total power and how it was formed, from per-rail watts.

    The module-input rail when the board has one; otherwise the sum of the module's own rails
    (gpu, cpu, soc, memory classes), leaving out carrier I/O rails that feed USB and displays.
    """
    for name in TOTAL_RAILS:
        if name in rails_w:
            return rails_w[name], f"module input rail {name}"
    parts = sorted(n for n in rails_w if classify_rail(n).cls in {"gpu", "cpu", "soc", "memory"})
    if not parts:
        return None
    return sum(rails_w[n] for n in parts), "sum of module rails " + "+".join(parts) + " (no input rail)"
