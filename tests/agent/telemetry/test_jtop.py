"""jtop backend on a recorded jtop dump of an Orin Nano, and on the real rail readings of AGX Orin and
Orin NX put in the shape jtop gives them (no jtop recording of those two was found), through the
converter the live path uses."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from ctxscope.agent.telemetry.jetson_jtop import JtopBackend, parse_snapshot, snapshot, static_info
from ctxscope.agent.telemetry.tegrastats import parse_line


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


def test_a_jtop_service_that_refuses_the_client_is_said_not_silent(monkeypatch, caplog):
    """jtop refuses a client of another minor version than its service: the agent falls back on
    tegrastats, and says why in its log (a board set up with a newer jtop lost power readings unseen)."""
    jtop = pytest.importorskip("jtop")

    class Refusing:
        def __init__(self, interval: float) -> None:
            pass

        def start(self) -> None:
            raise jtop.JtopException("Mismatch version jtop service: [4.5.4] and client: [4.3.2]")

        def close(self) -> None:
            pass

    monkeypatch.setattr(jtop, "jtop", Refusing)
    with caplog.at_level("WARNING", logger="ctxscope.agent.telemetry.jetson_jtop"):
        assert JtopBackend().available() is False
    assert "Mismatch version jtop service: [4.5.4] and client: [4.3.2]" in caplog.text


# --- Rail classes and board total per board -------------------------------------------------------
#
# Real jtop output was found for the Orin Nano only (fixtures/README.md says where we looked for AGX
# Orin and Orin NX dumps). For those two boards the tests below take the real rail readings of their
# recorded tegrastats lines and put them in the shape jtop's power service gives them
# (jetson-stats `jtop/core/power.py`, `PowerService.get_status` and `total_power`):
#   - each INA3221 rail becomes `rail[NAME] = {"power": mW}`; channels labelled `NC` are skipped, as
#     jtop skips them; voltage, current and limits are not in a tegrastats line and are left out;
#   - if a rail is named `VDD_IN` or `POM_5V_IN` it is moved out of `rail` into `tot` with `name`;
#   - otherwise `tot = {"power": sum of every rail}`, with no `name` (jtop's own sum, which on an AGX
#     Orin includes the carrier's VIN_SYS_5V0).
# The mW values are the first figure of each `NAME cur/avg` pair, unchanged. These snapshots are NOT
# jtop recordings; they test how the jtop backend treats those boards' rail sets and `tot` shapes.

_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/\d+mW")


def _jtop_power_from_tegrastats(line: str) -> dict[str, Any]:
    rail = {name: {"power": int(mw)} for name, mw in _RAIL.findall(line) if "NC" not in name}
    for name in ("POM_5V_IN", "VDD_IN"):
        if name in rail:
            return {"rail": rail, "tot": {**rail.pop(name), "name": name}}
    return {"rail": rail, "tot": {"power": sum(r["power"] for r in rail.values())}}


def _through_live_converter(props: dict[str, Any]) -> dict[str, Any]:
    """What `snapshot()` makes of a running jtop object whose properties hold `props`."""
    names = ("power", "temperature", "memory", "gpu", "nvpmodel", "jetson_clocks", "board")
    return snapshot(SimpleNamespace(**{name: props.get(name) for name in names}))


RAIL_CLASSES = {
    "agx_orin": {
        "VDD_GPU_SOC": "gpu (gpu+soc)",
        "VDD_CPU_CV": "cpu (cpu+cv)",
        "VIN_SYS_5V0": "io (carrier-5v)",
        "VDDQ_VDD2_1V8AO": "memory (dram+always-on)",
    },
    "orin_nx": {"VDD_IN": "total (module)", "VDD_CPU_GPU_CV": "gpu (cpu+gpu+cv)", "VDD_SOC": "soc (soc)"},
    "orin_nano": {"VDD_IN": "total (module)", "VDD_CPU_GPU_CV": "gpu (cpu+gpu+cv)", "VDD_SOC": "soc (soc)"},
}


def test_real_orin_nano_dump_through_the_live_converter(jtop_orin_nano):
    snap = _through_live_converter(jtop_orin_nano)
    values, method = parse_snapshot(snap)
    assert values == parse_snapshot(jtop_orin_nano)[0]
    info = static_info(snap)
    assert {k.removeprefix("rail_class."): v for k, v in info.items() if k.startswith("rail_class.")} == (
        RAIL_CLASSES["orin_nano"]
    )
    # The module input rail is the total; the other rails are parts of it and are not added to it.
    assert values["power_w"] == values["rail_VDD_IN_w"] == pytest.approx(5.133)
    assert values["power_w"] != pytest.approx(5.133 + 1.064 + 1.540)
    assert method == "jtop module input rail VDD_IN, INA3221 reading at the jtop service interval"


@pytest.mark.parametrize("board", ["agx_orin", "orin_nx"])
def test_rail_classes_from_the_boards_real_rails(board, lines_of):
    for line in lines_of(board):
        power = _jtop_power_from_tegrastats(line)
        info = static_info(_through_live_converter({"power": power}))
        classes = {k.removeprefix("rail_class."): v for k, v in info.items() if k.startswith("rail_class.")}
        expected = RAIL_CLASSES[board]
        if board == "agx_orin" and "VDDQ_VDD2_1V8AO" not in line:  # R36 lines 2-3 print three rails
            expected = {k: v for k, v in expected.items() if k != "VDDQ_VDD2_1V8AO"}
        assert classes == expected


def test_orin_nx_total_is_the_named_input_rail(lines_of):
    power = _jtop_power_from_tegrastats(lines_of("orin_nx")[0])
    assert power["tot"] == {"power": 6120, "name": "VDD_IN"} and "VDD_IN" not in power["rail"]
    values, method = parse_snapshot(_through_live_converter({"power": power}))
    assert values["power_w"] == values["rail_VDD_IN_w"] == pytest.approx(6.120)
    assert values["rail_VDD_CPU_GPU_CV_w"] == pytest.approx(0.436)
    assert values["rail_VDD_SOC_w"] == pytest.approx(2.464)
    assert method.startswith("jtop module input rail VDD_IN")


@pytest.mark.parametrize(
    ("index", "module_rails_mw", "carrier_mw"),
    [
        (0, {"VDD_GPU_SOC": 2399, "VDD_CPU_CV": 400, "VDDQ_VDD2_1V8AO": 301}, 4032),
        (1, {"VDD_GPU_SOC": 2412, "VDD_CPU_CV": 1607}, 4707),
        (2, {"VDD_GPU_SOC": 3178, "VDD_CPU_CV": 794}, 4543),
    ],
)
def test_agx_orin_total_is_module_rails_not_jtops_tot(index, module_rails_mw, carrier_mw, lines_of):
    """AGX Orin has no module input rail: jtop's `tot` is an unnamed sum of every rail, carrier
    VIN_SYS_5V0 included. The backend ignores an unnamed `tot` and sums the module's own rails
    (gpu, cpu, soc, memory classes), leaving out VIN_SYS_5V0, which feeds the carrier's USB and display."""
    line = lines_of("agx_orin")[index]
    power = _jtop_power_from_tegrastats(line)
    assert power["tot"] == {"power": sum(module_rails_mw.values()) + carrier_mw}  # no "name"
    values, method = parse_snapshot(_through_live_converter({"power": power}))
    assert values["power_w"] == pytest.approx(sum(module_rails_mw.values()) / 1000)
    assert values["power_w"] != pytest.approx(power["tot"]["power"] / 1000)
    assert values["rail_VIN_SYS_5V0_w"] == pytest.approx(carrier_mw / 1000)
    parts = "+".join(sorted(module_rails_mw))
    assert method == (
        f"jtop sum of module rails {parts} (no input rail), INA3221 reading at the jtop service interval"
    )
    # The tegrastats backend forms the same total from the same line.
    assert parse_line(line)[0]["power_w"] == pytest.approx(values["power_w"])


def test_gpu_keyed_by_chip_name_as_jtop_does_on_jetpack_5(jtop_orin_nano):
    # jetson-stats on JetPack 5 names the integrated GPU after its chip (jetson_stats issue #608
    # shows `ga10b` on an AGX Orin); only the key differs from the recorded JetPack 6 dump.
    renamed = {**jtop_orin_nano, "gpu": {"ga10b": jtop_orin_nano["gpu"]["gpu"]}}
    values, _ = parse_snapshot(renamed)
    assert values["clock_gpu_mhz"] == pytest.approx(306.0)
    assert values["util_gpu_pct"] == pytest.approx(4.8)
