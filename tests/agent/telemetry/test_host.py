"""The host backend, live."""

from __future__ import annotations

import psutil

from ctxscope.agent.telemetry.host import HostBackend


def test_host_reads_cpu_and_ram():
    host = HostBackend()
    assert host.available()
    assert {"util_cpu_pct", "ram_used_bytes", "swap_used_bytes"} <= set(host.metrics())
    assert host.metrics()["ram_used_bytes"] == "B"
    host.open()
    values = host.read()
    assert 0 < values["ram_used_bytes"] < psutil.virtual_memory().total
    assert 0 <= values["util_cpu_pct"] <= 100
    assert "power_w" not in values
    assert host.dtype_of("ram_used_bytes") == "f8"
    assert host.dtype_of("util_cpu_pct") == "f4"
