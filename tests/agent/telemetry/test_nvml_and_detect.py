"""NVML's translation layer where NVML is absent, and backend detection on real and fake roots."""

from __future__ import annotations

import os
import stat

import pynvml
import pytest

from ctxscope.agent.telemetry.base import TelemetryError
from ctxscope.agent.telemetry.detect import detect_backends, is_tegra, telemetry_meta
from ctxscope.agent.telemetry.nvml import NvmlBackend, device_count, init, nvml_call


def _nvml_answers() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


without_nvml = pytest.mark.skipif(
    _nvml_answers(), reason="an NVIDIA driver answers here: these test its absence"
)


@without_nvml
def test_nvml_errors_become_telemetry_errors():
    with pytest.raises(TelemetryError, match="nvmlInit"):
        nvml_call(pynvml.nvmlInit)
    with pytest.raises(TelemetryError):
        init()


@without_nvml
def test_nvml_backend_unavailable_without_raising():
    backend = NvmlBackend(0)
    assert backend.available() is False
    assert backend.metrics() == {}
    assert backend.power_method is None
    assert device_count() == 0


@without_nvml
def test_detection_here_is_the_host_alone():
    backends = detect_backends()
    assert [b.name for b in backends] == ["host"]
    assert "ram_used_bytes" in telemetry_meta(backends)["host"]


def test_tegra_from_release_file_or_device_tree(tmp_path):
    assert not is_tegra(tmp_path)
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert is_tegra(tmp_path)
    other = tmp_path / "other"
    (other / "etc").mkdir(parents=True)
    (other / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    assert is_tegra(other)


def test_tegra_without_jtop_falls_back_on_tegrastats(tmp_path, monkeypatch, replay):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "tegrastats"
    command = replay("orin_nx", 50)[:-2]  # the tool gets its own --interval from detection
    tool.write_text(f'#!/bin/sh\nexec {" ".join(command)} "$@"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    backends = detect_backends(rate_hz=20, root=root)
    assert [b.name for b in backends] == ["tegrastats", "host"]
    assert backends[0].command[:1] == ["tegrastats"]
    assert "rail_VDD_IN_w" in backends[0].metrics()
