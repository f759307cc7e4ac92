"""jtop backend on a recorded jtop dump of an Orin Nano, through the converter the live path uses."""

from __future__ import annotations

import pytest

from ctxscope.agent.telemetry.jetson_jtop import JtopBackend, parse_snapshot, static_info


def test_rails_total_and_method(jtop_orin_nano):
    values, method = parse_snapshot(jtop_orin_nano)
    assert values["power_w"] == pytest.approx(5.133)  # `tot` is the VDD_IN rail
    assert values["rail_VDD_IN_w"] == pytest.approx(5.133)
    assert values["rail_VDD_CPU_GPU_CV_w"] == pytest.approx(1.064)
    assert values["rail_VDD_SOC_w"] == pytest.approx(1.540)
    assert "VDD_IN" in method


def test_offline_sensors_absent_online_present(jtop_orin_nano):
    values, _ = parse_snapshot(jtop_orin_nano)
    assert "temp_cv0_c" not in values
    assert values["temp_tj_c"] == pytest.approx(47.906)
    assert values["temp_gpu_c"] == pytest.approx(46.406)


def test_memory_and_clocks_in_bytes_and_mhz(jtop_orin_nano):
    values, _ = parse_snapshot(jtop_orin_nano)
    assert values["ram_used_bytes"] == 1687344 * 1024
    assert values["swap_used_bytes"] == 0.0
    assert values["clock_gpu_mhz"] == pytest.approx(306.0)
    assert values["clock_mem_mhz"] == pytest.approx(2133.0)
    assert values["util_gpu_pct"] == pytest.approx(4.8)


def test_static_info_board_mode_and_rail_classes(jtop_orin_nano):
    info = static_info(jtop_orin_nano)
    assert info["module"] == "NVIDIA Jetson Orin Nano (4GB ram)"
    assert info["jetpack"] == "6.2"
    assert info["nvpmodel"] == "25W"
    assert info["jetson_clocks"] == "off"
    assert info["rail_class.VDD_IN"].startswith("total")
    assert info["rail_class.VDD_CPU_GPU_CV"] == "gpu (cpu+gpu+cv)"


def test_unavailable_here_without_raising():
    assert JtopBackend().available() is False
    assert JtopBackend().metrics() == {}
