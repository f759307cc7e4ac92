"""A calibrated-only device's prediction: the JSON endpoint over a real SQLite store, and the device
page in Debian's Chromium showing predicted curves with bands, class bars, assumptions, and predicted
against measured once the device's own points arrive."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ctxscope.agent.calibrate.run import calibrate_run
from ctxscope.agent.records import MemorySink
from ctxscope.shared.messages import MESSAGE_ADAPTER, Message, PointResult, RunStarted

REPO = Path(__file__).resolve().parents[3]
SOURCE_MODELS = {"qwen2.5-0.5b", "mamba2-130m"}
TARGET = "orin-nano"
BOARD = "NVIDIA Jetson Orin Nano Developer Kit"
RUNTIME = {"runtime": "transformers", "attention": "sdpa"}  # the source profiles' runtime for qwen2.5-0.5b


def source_records() -> list[Message]:
    """The H200's committed profile records of two models (run starts included)."""
    out = []
    with gzip.open(REPO / "results/profiling/h200_records.jsonl.gz", "rt") as f:
        for line in f:
            record = json.loads(line)
            model = record.get("model") or record.get("plan", {}).get("profile", {}).get("model")
            if record["kind"] in {"run_started", "result"} and model in SOURCE_MODELS:
                out.append(MESSAGE_ADAPTER.validate_python(record))
    return out


@pytest.fixture(scope="module")
def calibration() -> list[Message]:
    """A real calibration (CPU, tiny sizes) as a board whose SSM kernels are absent would send it."""
    sink = MemorySink(device=TARGET)
    calibrate_run(sink, device="cpu", budget_s=3.0, tiny=True)
    records: list[Message] = []
    for r in sink.records:
        if isinstance(r, RunStarted):
            r = r.model_copy(update={"manifest": {**r.manifest, "device_description": BOARD}})
        records.append(r)  # type: ignore[arg-type]
    return records


@pytest.fixture
def fleet(simfleet: Any, feeder: Any, calibration: list[Message]) -> None:
    h200, nano = simfleet.SimDevice("h200"), simfleet.SimDevice(TARGET)
    feeder([h200.meta(141 * 2**30), nano.meta(8 * 2**30), nano.status("online")])
    feeder(source_records())
    feeder(calibration)


def test_prediction_json_marks_assumed_and_measured(served: Any, fleet: None) -> None:
    view = httpx.get(f"{served.url}/api/devices/{TARGET}/prediction", timeout=30).json()
    assert view["available"] and view["source_device"] == "h200"
    assert view["target"]["calibrated"] and view["target"]["reference"]
    statuses = {a["what"]: a["status"] for a in view["assumptions"]}
    assert statuses["target gemm rate"] == "measured"  # from the calibration
    assert statuses["target ssd_scan rate"] == "assumed"  # absent there: the board's peak entry
    assert statuses["source gemm rate"] == "assumed"  # the H200 has no calibration in this store
    decode_step = next(a for a in view["assumptions"] if a["what"] == "target decode step")
    assert decode_step["value"] == "eager" and "(cpu)" in decode_step["how"]  # calibrated on the CPU
    qwen = next(c for c in view["curves"] if c["model"] == "qwen2.5-0.5b" and c["phase"] == "prefill")
    assert qwen["measured_range"] == [1024, 131072]
    for p in qwen["points"]:
        assert p["low_ms"] < p["latency_ms"]
        assert p["high_ms"] is None or p["high_ms"] > p["latency_ms"]
    assert {"predicted-ttft", "predicted-classes"} <= set(view["figures"])
    missing = httpx.get(f"{served.url}/api/devices/h200/prediction", timeout=30).json()
    assert missing == {"device": "h200", "available": False, "reason": missing["reason"]}


def test_figures_that_are_not_positive_give_a_reason_or_are_left_out(
    served: Any, simfleet: Any, feeder: Any, calibration: list[Message], result_factory: Any
) -> None:
    """A device may send any finite number: a measured TTFT of 0 ms divided the comparison's error by
    zero, and a calibration rate of 0 the prediction's scale factor (both a server error)."""
    h200, nano = simfleet.SimDevice("h200"), simfleet.SimDevice(TARGET)
    feeder([h200.meta(141 * 2**30), nano.meta(8 * 2**30)])
    feeder(source_records())
    feeder(calibration)
    feeder(
        [
            result_factory(
                device=TARGET, context_len=4096, implementation=RUNTIME, metrics={"ttft": ("ms", [0.0])}
            )
        ]
    )
    feeder(
        [
            result_factory(
                device=TARGET, context_len=16384, implementation=RUNTIME, metrics={"ttft": ("ms", [900.0])}
            )
        ]
    )
    view = httpx.get(f"{served.url}/api/devices/{TARGET}/prediction", timeout=30).json()
    qwen = next(c for c in view["curves"] if c["model"] == "qwen2.5-0.5b" and c["phase"] == "prefill")
    assert [row["context_len"] for row in qwen["comparison"]] == [16384]
    later = []  # the same calibration run again, later, with every rate 0
    for r in calibration:
        update: dict[str, Any] = {"run_id": "later", "seq": r.seq + 10_000, "ts": r.ts + 1}
        if isinstance(r, PointResult) and "calibration_rate" in r.metrics:
            rate = r.metrics["calibration_rate"]
            update["metrics"] = {**r.metrics, "calibration_rate": rate.model_copy(update={"samples": [0.0]})}
        later.append(r.model_copy(update=update))
    feeder(later)
    view = httpx.get(f"{served.url}/api/devices/{TARGET}/prediction", timeout=30).json()
    assert view["available"] is False and "not a positive figure" in view["reason"], view


def test_a_prediction_meets_only_measurements_of_what_it_predicts(
    served: Any, fleet: None, simfleet: Any, feeder: Any, result_factory: Any
) -> None:
    """The comparison beside a predicted curve takes the device's points of the same model, runtime,
    precision and logits mode, in milliseconds whatever unit they came in; a shrunk run (`tiny = true`)
    is not a measurement of the real model."""
    nano = simfleet.SimDevice(TARGET)
    tiny = nano.run_started("tiny-run", 1).model_copy(update={"plan": {"tiny": True}})
    feeder(
        [
            tiny,
            result_factory(
                device=TARGET,
                run_id="tiny-run",
                context_len=4096,
                implementation=RUNTIME,
                metrics={"ttft": ("ms", [0.5])},
            ),
            result_factory(
                device=TARGET, context_len=16384, implementation=RUNTIME, metrics={"ttft": ("s", [0.07])}
            ),
            result_factory(
                device=TARGET,
                context_len=16384,
                precision="fp32",
                implementation=RUNTIME,
                metrics={"ttft": ("ms", [200.0])},
            ),
            result_factory(
                device=TARGET,
                context_len=65536,
                implementation={"runtime": "mamba_ssm"},
                metrics={"ttft": ("ms", [300.0])},
            ),
        ]
    )
    view = httpx.get(f"{served.url}/api/devices/{TARGET}/prediction", timeout=30).json()
    qwen = next(c for c in view["curves"] if c["model"] == "qwen2.5-0.5b" and c["phase"] == "prefill")
    assert (qwen["runtime"], qwen["precision"], qwen["logits"]) == ("transformers", "bf16", "last")
    assert [(row["context_len"], row["measured_ms"]) for row in qwen["comparison"]] == [(16384, 70.0)]


# free-form parts of records (`details`, `manifest`, `plan`) in shapes the agent never writes
OTHER_SHAPES = [
    ("x", {"device_peaks": 5}, {"calibrate": "x"}),
    ({"prefill": "x"}, {"device_peaks": "no such card"}, {"calibrate": None}),
    ({"prefill": {"classes": "x"}}, {"gpu": "x"}, {"calibrate": ["cuda"]}),
    ({"prefill": {"classes": {"gemm": {"time_ms": None, "kernels": 1}}}}, {"gpu": {"name": 5}}, {}),
    (
        {"prefill": {"passes": "x", "classes": {"gemm": {"time_ms": 1.0, "kernels": 1}}}},
        {"operating_point": "x"},
        {},
    ),
    ({"prefill": {"classes": {"gemm": {"kernels": 1}}}}, {"device_description": ["x"]}, {}),
]


@pytest.mark.parametrize(("operators", "manifest", "plan"), OTHER_SHAPES)
def test_free_form_parts_of_another_shape_are_left_out(
    served: Any, simfleet: Any, feeder: Any, result_factory: Any, operators: Any, manifest: Any, plan: Any
) -> None:
    """A profile whose `details.operators` had another shape made every prediction from its device a
    server error ('str' object has no attribute 'items'), as did a manifest's `gpu` or `device_peaks`
    and a calibration plan of another shape on the target."""
    h200, nano = simfleet.SimDevice("h200"), simfleet.SimDevice(TARGET)
    feeder([h200.meta(141 * 2**30), nano.meta(8 * 2**30)])
    feeder(source_records())
    latency = {"profile_prefill_latency": ("ms", [5.0])}
    feeder(
        [result_factory(device="h200", context_len=2048, metrics=latency, details={"operators": operators})]
    )
    known = nano.run_started("known", 1).model_copy(
        update={"manifest": {"device_peaks": "jetson-orin-nano-8gb"}}
    )
    other = nano.run_started("other", 1).model_copy(update={"manifest": manifest, "plan": plan})
    feeder([known, other])
    view = httpx.get(f"{served.url}/api/devices/{TARGET}/prediction", timeout=30).json()
    assert view["available"] is True and view["source_device"] == "h200"
    qwen = next(c for c in view["curves"] if c["model"] == "qwen2.5-0.5b" and c["phase"] == "prefill")
    assert 2048 not in [p["context_len"] for p in qwen["points"]]


playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
LEGEND = "() => [...document.querySelectorAll('#chart-predicted-ttft .legendtext')].map(t => t.textContent)"
SCREENSHOTS = Path(tempfile.gettempdir()) / "ctxscope-screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.mark.browser
def test_calibrated_only_device_page_shows_predicted_curves_and_bands(
    served: Any, fleet: None, browser: Any, feeder: Any, result_factory: Any
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{served.url}/devices/{TARGET}")
    page.wait_for_selector("#chart-predicted-ttft .main-svg")
    page.wait_for_selector("#chart-predicted-classes .main-svg")
    assert page.locator("#prediction-section").is_visible()
    legend = page.evaluate(LEGEND)
    assert any(t.startswith("qwen2.5-0.5b (transformers) predicted") for t in legend)
    # the band is a filled polygon (one per curve with an upper end)
    assert page.locator("#chart-predicted-ttft path.js-fill").count() >= 1
    assumptions = page.locator("#prediction-assumptions tbody").inner_text()
    assert "measured" in assumptions and "assumed" in assumptions
    assert "×" in page.locator("#chart-predicted-classes").inner_text()
    assert "calibrated" in page.locator("#prediction-note").inner_text()
    host = page.locator("#prediction-host").inner_text()
    assert "qwen2.5-0.5b prefill up to" in host and "not calibrated on both" in host
    # the device's own points arrive: predicted and measured side by side
    feeder(
        [
            result_factory(
                device=TARGET,
                context_len=4096,
                implementation=RUNTIME,
                metrics={"ttft": ("ms", [900.0, 910.0])},
            )
        ]
    )
    page.reload()
    page.wait_for_selector("#prediction-compare tbody tr")
    row = page.locator("#prediction-compare tbody tr").first.inner_text()
    assert "qwen2.5-0.5b" in row and "4096" in row and "%" in row
    page.wait_for_function(
        f"() => ({LEGEND})().some(t => t.startsWith('qwen2.5-0.5b (transformers) measured'))"
    )
    page.screenshot(path=str(SCREENSHOTS / "prediction.png"), full_page=True)
    assert errors == []
    page.close()
