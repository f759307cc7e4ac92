"""Benchmark: record -> open page latency and collector CPU with N simulated devices streaming.

Starts a private mosquitto on a free loopback port, the collector (ingest + SQLite store + dashboard)
in its own process, and N simulated devices in another. Two observers watch the dashboard:
- a page emulator: follows /api/events like the fleet page and, for each `changed` event, fetches
  /api/fleet/<device> as the page does; the telemetry's `probe_publish_s` channel holds the device's
  publish time, so `now - probe` is the time from the device's publish (an upper bound of the
  arrival at the collector) to the value being available to the page;
- optionally (--browser) the real fleet page in headless Chromium, whose script records, per shown
  update, the time from the collector's commit to the DOM update.
The collector process's CPU use is sampled every second with psutil (100% = one core).

    python bench/collector/bench_live.py --devices 100 --duration 60 --browser \
        --out results/collector/live_latency.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ctxscope.broker import MosquittoBroker

HERE = Path(__file__).resolve().parent


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": int(a.size), "p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max())}


class PageEmulator:
    """Follows the event stream like the fleet page: devices with news are fetched together from
    /api/fleet?devices=..., one request in flight, at most one every 250 ms."""

    MIN_INTERVAL_S = 0.25

    def __init__(self, url: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.latencies_ms: list[float] = []
        self.requests = 0
        self.measuring = False
        self.stop = threading.Event()
        self._dirty: set[str] = set()
        self._news = threading.Condition()
        self._last_probe: dict[str, float] = {}
        self.threads = [
            threading.Thread(target=self._events, daemon=True),
            threading.Thread(target=self._fetch, daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _events(self) -> None:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        conn.request("GET", "/api/events")
        response = conn.getresponse()
        while not self.stop.is_set():
            line = response.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                with self._news:
                    self._dirty.update(e["device"] for e in json.loads(line[6:])["events"])
                    self._news.notify()

    def _fetch(self) -> None:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        while not self.stop.is_set():
            with self._news:
                self._news.wait_for(lambda: bool(self._dirty), timeout=0.5)
                batch, self._dirty = sorted(self._dirty), set()
            if not batch:
                continue
            started = time.monotonic()
            conn.request("GET", "/api/fleet?devices=" + ",".join(batch))
            fleet = json.loads(conn.getresponse().read())
            now = time.time_ns() / 1e9
            self.requests += 1
            for d in fleet["devices"]:
                probe = d["telemetry"]["channels"].get("probe_publish_s")
                if probe is None or probe["value"] <= self._last_probe.get(d["device"], 0.0):
                    continue
                self._last_probe[d["device"]] = probe["value"]
                if self.measuring:
                    self.latencies_ms.append((now - probe["value"]) * 1e3)
            time.sleep(max(0.0, self.MIN_INTERVAL_S - (time.monotonic() - started)))


def slice_p99(ts: np.ndarray, lags: np.ndarray, start_ns: int, width_ns: int) -> list[float]:
    """The p99 of `lags` per slice of `width_ns` of the records' times `ts`, from `start_ns` on: shows
    whether a backlog grows, holds or drains over a window."""
    slices = (ts - start_ns) // width_ns
    return [float(np.percentile(lags[slices == k], 99)) for k in np.unique(slices)]


def browser_page(url: str) -> Any:
    """The fleet page in headless Chromium, or None when playwright/chromium are missing."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    pw = sync_playwright().start()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    browser = pw.chromium.launch(executable_path=chromium, args=flags, headless=True)
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/")
    page.wait_for_selector("#live.on")
    return pw, browser, page, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument(
        "--period", type=float, default=1.0, help="seconds between a device's telemetry batches"
    )
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--browser", action="store_true", help="also measure on the real page in Chromium")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctxscope-bench-"))
    broker = MosquittoBroker(work / "broker")
    broker.start()
    address = f"{broker.host}:{broker.port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    collector = subprocess.Popen(
        [sys.executable, str(HERE / "collector_proc.py"), address, f"sqlite:///{work / 'collector.db'}"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    devices = None
    browser = None
    try:
        assert collector.stdout is not None
        url = collector.stdout.readline().split()[1]
        emulator = PageEmulator(url)
        emulator.start()
        devices = subprocess.Popen(
            [sys.executable, str(HERE / "devices_proc.py"), broker.host, str(broker.port),
             str(args.devices), str(args.period)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=HERE,
        )  # fmt: skip
        time.sleep(args.warmup / 2)
        if args.browser:
            browser = browser_page(url)
        time.sleep(args.warmup / 2)
        if browser is not None:
            browser[2].evaluate("window.ctxscopeState.latenciesMs.length = 0")
        proc = psutil.Process(collector.pid)
        proc.cpu_percent(None)
        emulator.measuring = True
        cpu: list[float] = []
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            time.sleep(1.0)
            cpu.append(proc.cpu_percent(None))
        emulator.measuring = False
        page_latencies = (
            browser[2].evaluate("window.ctxscopeState.latenciesMs") if browser is not None else None
        )
        fleet = json.loads(urllib.request.urlopen(url + "/api/fleet", timeout=30).read())
        devices.terminate()
        published = int(devices.communicate(timeout=30)[0].split()[-1])
    finally:
        if browser is not None:
            browser[1].close()
            browser[0].stop()
        if devices is not None and devices.poll() is None:
            devices.kill()
        collector.terminate()
        collector.wait(30)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "record -> open page latency with simulated devices streaming (collector_web)",
        "command": " ".join(["python", "bench/collector/bench_live.py", *sys.argv[1:]]),
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "devices": args.devices,
            "period_s": args.period,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
        },
        "records_published": published,
        "devices_seen": len(fleet["devices"]),
        "publish_to_page_ms": {
            **percentiles(emulator.latencies_ms),
            "requests": emulator.requests,
            "method": "device publish wall time (probe channel) to the page emulator having fetched the "
            "device's live view after the `changed` event (batched like the fleet page); same host clock",
        },
        "commit_to_dom_ms": None
        if page_latencies is None
        else {
            **percentiles(page_latencies),
            "method": "collector commit callback time to DOM update in the fleet page (headless Chromium)",
            "console_errors": browser[3] if browser is not None else [],
        },
        "collector_cpu_percent_of_one_core": {
            **percentiles(cpu),
            "mean": float(np.mean(cpu)) if cpu else None,
            "method": "psutil Process.cpu_percent of the collector process (ingest, store, web), 1 s samples",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
