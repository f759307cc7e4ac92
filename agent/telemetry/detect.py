"""Pick the telemetry backends of this machine, in order, without ever raising.

Tegra comes first because on Jetson `nvmlInit` may succeed while power and temperatures answer
NotSupported. On Tegra: jtop if its service answers, else tegrastats if the tool exists. Elsewhere:
one NVML backend per GPU whose power reads work. The host backend always closes the list.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ctxscope.agent.telemetry.base import Backend
from ctxscope.agent.telemetry.host import HostBackend
from ctxscope.agent.telemetry.jetson_jtop import JtopBackend
from ctxscope.agent.telemetry.nvml import NvmlBackend, device_count
from ctxscope.agent.telemetry.tegrastats import TegrastatsBackend


def is_tegra(root: Path | str = "/") -> bool:
    """A Jetson/Tegra board: L4T release file, or a device-tree model naming Jetson or Tegra."""
    base = Path(root)
    if (base / "etc/nv_tegra_release").is_file():
        return True
    try:
        model = (base / "proc/device-tree/model").read_text(errors="replace").lower()
    except OSError:
        return False
    return "jetson" in model or "tegra" in model


def detect_backends(rate_hz: float = 20.0, root: Path | str = "/") -> list[Backend]:
    """Available backends, most specific first; always ends with the host backend."""
    found: list[Backend] = []
    if is_tegra(root):
        jtop = JtopBackend()
        if jtop.available():
            found.append(jtop)
        elif shutil.which("tegrastats"):
            tegra = TegrastatsBackend(
                interval_ms=max(50, round(1000 / min(rate_hz, TegrastatsBackend.max_rate_hz)))
            )
            if tegra.available():
                found.append(tegra)
    else:
        for index in range(device_count()):
            gpu = NvmlBackend(index)
            if gpu.available():
                found.append(gpu)
    host = HostBackend()
    host.available()
    found.append(host)
    return found


def telemetry_meta(backends: list[Backend]) -> dict[str, list[str]]:
    """What DeviceMeta.telemetry publishes: backend name -> the metrics it supports here."""
    return {b.name: sorted(b.metrics()) for b in backends}
