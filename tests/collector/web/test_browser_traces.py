"""A committed H200 results file, imported, on the dashboard in headless Chromium: its curves and its
power trace on the device page, its sparkline on the fleet page; and a live trace that grows while
telemetry streams in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxscope.collector.importer import import_files
from ctxscope.collector.store import Store
from tests.collector.web.test_browser import Streamer, browser, page  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "results/engine/h200-call9/curves-long.jsonl.gz"
MODELS = ("qwen2.5-0.5b", "llama3.2-1b", "mamba-790m", "mamba2-780m")
POINTS = "document.getElementById('power-trace').data"


def test_imported_results_show_curves_and_power_trace(served: Any, page: Any, store: Store) -> None:  # noqa: F811
    summary = import_files(store, [COMMITTED])
    assert summary.bad_lines == 0 and summary.devices == {"vm"}
    p, console = page
    p.goto(served.url + "/devices/vm")
    p.wait_for_selector("#chart-memory_peak .main-svg")
    legend = p.evaluate(
        "[...document.querySelectorAll('#chart-memory_peak .legendtext')].map(t => t.textContent)"
    )
    for model in MODELS:
        assert any(text.startswith(model) for text in legend), (model, legend)
    p.wait_for_function(f"() => {POINTS} && {POINTS}.length === 2 && {POINTS}[0].x.length > 50")
    names = p.evaluate(f"{POINTS}.map(t => t.name)")
    assert names == ["power (W)", "temp_gpu_c (C)"]
    watts = p.evaluate(f"{POINTS}[0].y")
    assert 50 < max(watts) < 1000, "an H200 under load draws hundreds of watts"
    p.goto(served.url + "/")
    p.wait_for_selector("#spark-vm .main-svg")
    assert p.evaluate("document.getElementById('spark-vm').data[0].y.length") > 10
    assert console.errors == []


def test_device_trace_follows_live_telemetry(served: Any, page: Any, simfleet: Any, feeder: Any) -> None:  # noqa: F811
    orin = simfleet.SimDevice("orin-1")
    feeder([orin.meta(), orin.status("online"), orin.telemetry(10.0, 40.0)])
    p, console = page
    p.goto(served.url + "/devices/orin-1")
    p.wait_for_function(f"() => {POINTS} && {POINTS}.length === 2")
    before = p.evaluate(f"{POINTS}[0].x.length")
    with Streamer(feeder, orin):
        p.wait_for_function(f"() => {POINTS}[0].x.length > {before} + 20", timeout=10000)
    assert max(p.evaluate(f"{POINTS}[0].y")) > 10.0  # the streamer's power rises
    assert console.errors == []


def test_a_device_without_telemetry_shows_a_note_not_empty_axes(
    served: Any,
    page: Any,  # noqa: F811
    simfleet: Any,
    feeder: Any,
) -> None:
    quiet = simfleet.SimDevice("quiet-1")
    feeder([quiet.meta(), quiet.status("online")])
    p, console = page
    p.goto(served.url + "/devices/quiet-1")
    p.wait_for_function(
        "() => document.getElementById('power-trace-note').textContent.startsWith('no power or temperature')"
    )
    assert p.evaluate("document.getElementById('power-trace').hidden") is True
    assert console.errors == []


def test_device_supplied_units_and_channel_names_are_text_in_the_traces(
    served: Any,
    page: Any,  # noqa: F811
    simfleet: Any,
    feeder: Any,
) -> None:
    """plotly.js renders links and styles in trace names: the device's unit and channel name are shown
    as text (the fleet page's sparklines take their names from the same code, in hover labels)."""
    evil = simfleet.SimDevice("evil-1")
    batch = evil.telemetry(12.0, 40.0)
    power, temp = batch.channels["power_w"], batch.channels["temp_gpu_c"]
    hostile = {
        "power_w": power.model_copy(update={"unit": '<a href="//e.example">u</a>'}),
        'temp_<b style="font-size:90px">B</b>_c': temp,
    }
    feeder([evil.meta(), evil.status("online"), batch.model_copy(update={"channels": hostile})])
    p, console = page
    p.goto(served.url + "/devices/evil-1")
    p.wait_for_function(f"() => {POINTS} && {POINTS}.length === 2")
    legend = p.locator("#power-trace .legendtext").all_text_contents()
    assert legend == ['power (<a href="//e.example">u</a>)', 'temp_<b style="font-size:90px">B</b>_c (C)']
    assert p.locator("#power-trace a, #power-trace b").count() == 0
    assert console.errors == []
