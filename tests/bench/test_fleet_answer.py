"""The fleet-answer benchmark times real HTTP requests against a filled store: all, ten and one device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.bench_scripts import load_bench


def test_it_times_the_whole_fleet_and_ten_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "fleet.json"
    argv = ["fleet_answer.py", "--devices", "40", "--requests", "3", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load_bench("collector/fleet_answer.py").main()
    report = json.loads(out.read_text())
    assert report["devices"] == 40
    every, ten, one = report["every_device"], report["ten_devices"], report["one_device_live"]
    assert every["requests"] == ten["requests"] == one["requests"] == 3
    assert 0 < every["wall_ms_p50"] <= every["wall_ms_p95"]
    # ten devices' answer is a fraction of the fleet's (each device's entry is about the same size)
    assert 0.1 < ten["answer_bytes"] / every["answer_bytes"] < 0.5
