"""The dashboard app served by uvicorn over a real SQLite store: every page, every JSON twin, SSE."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read().decode()


def get_json(url: str) -> Any:
    status, ctype, body = get(url)
    assert status == 200, body
    assert ctype.startswith("application/json")
    return json.loads(body)


@pytest.fixture
def fleet_of_two(simfleet, feeder):
    orin, rtx = simfleet.SimDevice("orin-1"), simfleet.SimDevice("rtx-1")
    feeder([orin.meta(8 * 2**30), orin.status("online"), orin.telemetry(power_w=12.5, temp_c=48.0)])
    feeder(simfleet.sweep(orin))
    feeder(
        [
            rtx.meta(24 * 2**30),
            rtx.status("busy", run_id="r2"),
            rtx.run_started("r2", 10),
            rtx.progress("r2", 3, 10),
        ]
    )
    feeder([rtx.result("r2", "qwen2.5-0.5b", "transformer", 1024, 5.0, 900.0)])
    return orin, rtx


def test_fleet_page_and_twin(served, fleet_of_two):
    status, ctype, html = get(served.url + "/")
    assert status == 200 and ctype.startswith("text/html")
    assert 'data-json="/api/fleet"' in html and "/static/plotly.min.js" in html
    fleet = get_json(served.url + "/api/fleet")
    by_id = {d["device"]: d for d in fleet["devices"]}
    assert set(by_id) == {"orin-1", "rtx-1"}
    assert fleet["online"] == 2
    assert by_id["orin-1"]["telemetry"]["power_w"] == pytest.approx(12.5)
    assert by_id["orin-1"]["telemetry"]["temperature_c"] == pytest.approx(48.0)
    # rtx-1 sent no telemetry: its power is absent, not zero.
    assert "power_w" not in by_id["rtx-1"]["telemetry"]
    assert [(r["device"], r["done"], r["total"]) for r in fleet["running"]] == [("rtx-1", 3, 10)]
    assert [(r["device"], r["outcome"]) for r in fleet["finished"]] == [("orin-1", "completed")]
    live = get_json(served.url + "/api/fleet/rtx-1")
    assert live["summary"]["state"] == "busy" and live["runs"][0]["done"] == 3


def test_device_page_twin_and_figures(served, fleet_of_two):
    status, _, html = get(served.url + "/devices/orin-1")
    assert status == 200 and 'data-device="orin-1"' in html
    view = get_json(served.url + "/api/devices/orin-1")
    assert view["result_count"] == 8
    ch = view["characterization"]
    assert {m["model"]: m["max_ok_tokens"] for m in ch["max_context"]} == {
        "mamba2-780m": 65536,
        "qwen2.5-0.5b": 65536,
    }
    (crossover,) = ch["crossovers"]
    assert crossover["transformer"]["model"] == "qwen2.5-0.5b"
    # The simulated TTFT curves cross near 12.5K tokens; log-length interpolation between 4K and 16K.
    assert 4096 < crossover["crossings"][0]["length_tokens"] < 16384
    ttft_fits = {f["model"]: f["fit"] for f in ch["ttft_fits"]}
    # The simulated transformer's TTFT is 0.01 L + 1e-6 L^2 ms: the fit recovers it.
    assert ttft_fits["qwen2.5-0.5b"]["c_per_token2"] == pytest.approx(1e-6, rel=1e-6)
    assert ttft_fits["qwen2.5-0.5b"]["b_per_token"] == pytest.approx(0.01, rel=1e-6)
    fits = {f["model"]: f for f in ch["memory_fits"]}
    # Linear memory 1000 + 0.3 L MiB reaches the 8 GiB device at (8192 - 1000) / 0.3 tokens.
    assert fits["qwen2.5-0.5b"]["extrapolated_limit_tokens"] == pytest.approx((8192 - 1000) / 0.3, rel=1e-6)
    assert view["reference_max_context"]["mamba2-780m"]["rtx4090"] == 220000
    figures = get_json(served.url + "/api/devices/orin-1/figures")["figures"]
    assert {"ttft", "decode_per_token", "memory_peak", "prefill_energy_per_token", "operator_shares"} <= set(
        figures
    )
    # The split shows measured parts only, the analytic estimates stay in the JSON twin.
    assert [t["name"] for t in figures["memory_split"]["data"]] == [
        "mamba2-780m bf16: weights",
        "qwen2.5-0.5b bf16: weights",
    ]
    shares = {t["name"]: t["y"] for t in figures["operator_shares"]["data"]}
    assert shares == {"gemm": [40.0], "other": [5.0], "ssm_scan": [55.0]}
    assert view["operator_shares"][0]["phase"] == "prefill"
    names = [t["name"] for t in figures["ttft"]["data"]]
    assert names == ["mamba2-780m bf16", "qwen2.5-0.5b bf16"]
    with_ref = get_json(served.url + "/api/devices/orin-1/figures?reference=1")["figures"]
    assert any(t["name"].startswith("paper qwen2.5-0.5b") for t in with_ref["ttft"]["data"])
    assert get(served.url + "/devices/nope")[0] == 404
    assert get(served.url + "/api/devices/nope")[0] == 404


def test_compare_page_and_twin(served, fleet_of_two):
    status, _, html = get(served.url + "/compare")
    assert status == 200 and "compare-chart" in html
    view = get_json(served.url + "/api/compare?devices=orin-1,rtx-1&models=qwen2.5-0.5b&metric=ttft")
    assert view["devices"] == ["orin-1", "rtx-1"]
    row = next(r for r in view["rows"] if r["context_len"] == 1024)
    assert set(row["by_device"]) == {"orin-1", "rtx-1"}
    assert row["by_device"]["rtx-1"]["median"] == pytest.approx(5.0)
    assert {t["name"] for t in view["figure"]["data"]} == {
        "orin-1: qwen2.5-0.5b bf16",
        "rtx-1: qwen2.5-0.5b bf16",
    }


def test_plotly_js_is_served_locally(served):
    status, ctype, body = get(served.url + "/static/plotly.min.js")
    assert status == 200 and "javascript" in ctype and len(body) > 1_000_000
    assert get(served.url + "/static/app.js")[0] == 200


def test_sending_a_plan_without_a_broker_is_refused_clearly(served, fleet_of_two, web_client):
    client = web_client(served.url)
    client.page("/devices/orin-1")
    status, answer = client.post_json("/api/devices/orin-1/plans", {"plan_toml": "x = 1"})
    assert status == 503
    assert "no broker" in answer["detail"]


def read_sse_batch(response: http.client.HTTPResponse, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    event, data = None, None
    while time.monotonic() < deadline:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and event == "batch" and data is not None:
            return json.loads(data)
    raise TimeoutError("no SSE batch")


def test_events_announce_committed_changes_per_device(served, simfleet, feeder):
    dev = simfleet.SimDevice("jet-1")
    feeder([dev.meta()])
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", "/api/events?device=jet-1")
    response = conn.getresponse()
    assert response.status == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.readline().startswith(b"retry:")
    before = time.time_ns()
    other = simfleet.SimDevice("other-1")
    feeder([other.telemetry(1.0, 30.0)])  # another device's change is filtered out
    feeder([dev.telemetry(9.0, 50.0)])
    batch = read_sse_batch(response, 5)
    assert [(e["kind"], e["device"]) for e in batch["events"]] == [("changed", "jet-1")]
    assert before <= batch["events"][0]["arrived_ns"] <= batch["sent_ns"]
    conn.close()
