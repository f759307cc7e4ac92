"""The in-flight window check counts what a collector-like subscriber receives un-acknowledged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.bench_scripts import load_bench


def test_the_window_holds_until_the_first_acknowledgement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "window.json"
    argv = ["inflight_window.py", "--messages", "200", "--rounds", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load_bench("collector/inflight_window.py").main()
    report = json.loads(out.read_text())
    before, after = report["rows"]
    assert before == {"acknowledged": 0, "received": 20}  # mosquitto's default window of 20
    assert after["acknowledged"] == 1
    assert 21 <= after["received"] <= 200  # at least the one freed slot, never more than was sent
    assert report["broker"].startswith("mosquitto version")
