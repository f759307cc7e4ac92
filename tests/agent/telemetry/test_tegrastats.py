"""tegrastats backend on recorded lines of AGX Orin, Orin NX and Orin Nano, live path included."""

from __future__ import annotations

import time

import pytest

from ctxscope.agent.telemetry.jetson_rails import classify_rail
from ctxscope.agent.telemetry.tegrastats import TegrastatsBackend, parse_line

EXPECTED = {
    # board: (rails and their classes, power_w, how power_w was formed, sensors that must be absent)
    "agx_orin": (
        {"VDD_GPU_SOC": "gpu", "VDD_CPU_CV": "cpu", "VIN_SYS_5V0": "io", "VDDQ_VDD2_1V8AO": "memory"},
        2.399 + 0.400 + 0.301,
        "no input rail",
        {"temp_gpu_c", "temp_cv0_c"},  # printed as -256C: powered off
    ),
    "orin_nx": ({"VDD_IN": "total", "VDD_CPU_GPU_CV": "gpu", "VDD_SOC": "soc"}, 6.120, "VDD_IN", set()),
    "orin_nano": ({"VDD_IN": "total", "VDD_CPU_GPU_CV": "gpu", "VDD_SOC": "soc"}, 4.761, "VDD_IN", set()),
}


@pytest.mark.parametrize("board", list(EXPECTED))
def test_first_line_rails_classes_and_total(board, lines_of):
    rails, power_w, how, absent = EXPECTED[board]
    values, method = parse_line(lines_of(board)[0])
    assert {k.removeprefix("rail_").removesuffix("_w") for k in values if k.startswith("rail_")} == set(rails)
    assert {name: classify_rail(name).cls for name in rails} == rails
    assert values["power_w"] == pytest.approx(power_w)
    assert how in method
    assert not absent & set(values)
    assert "NC" not in str(values)


@pytest.mark.parametrize("board", list(EXPECTED))
def test_every_recorded_line_gives_power_temperatures_and_memory(board, lines_of):
    for line in lines_of(board):
        values, _ = parse_line(line)
        assert values["power_w"] > 0
        assert 20 < values["temp_tj_c"] < 100
        assert values["ram_used_bytes"] > 0
        assert 0 <= values["util_gpu_pct"] <= 100


def test_agx_total_leaves_out_the_carrier_io_rail(lines_of):
    values, _ = parse_line(lines_of("agx_orin")[1])
    assert values["power_w"] == pytest.approx(2.412 + 1.607)
    assert values["rail_VIN_SYS_5V0_w"] == pytest.approx(4.707)


def test_clocks_from_gr3d_and_emc(lines_of):
    values, _ = parse_line(lines_of("agx_orin")[1])
    assert values["clock_mem_mhz"] == 2133.0
    assert values["util_emc_pct"] == 3.0
    assert values["clock_gpu_mhz"] == 0.0  # GR3D_FREQ 0%@[0,0]: GPU rail-gated while idle


def test_combined_rail_names_its_components():
    assert classify_rail("VDD_CPU_GPU_CV").components == ("cpu", "gpu", "cv")


def test_live_backend_reads_the_child_process_lines(replay, lines_of):
    backend = TegrastatsBackend(interval_ms=20, command=replay("orin_nano", 20))
    assert backend.available()
    assert backend.power_method is not None and "VDD_IN" in backend.power_method
    assert backend.metrics()["rail_VDD_SOC_w"] == "W"
    backend.open()
    try:
        time.sleep(0.5)
        rows = backend.drain()
    finally:
        backend.close()
    assert len(rows) >= 5
    stamps = [t for t, _ in rows]
    assert stamps == sorted(stamps)
    expected = [parse_line(line)[0] for line in lines_of("orin_nano")]
    for i, (_, values) in enumerate(rows):
        assert values == {k: v for k, v in expected[i % len(expected)].items() if k in backend.metrics()}


def test_missing_binary_is_unavailable_without_raising():
    assert not TegrastatsBackend(command=["/nonexistent/tegrastats"]).available()
