"""The dashboard in headless Chromium (Debian's), driven by playwright: every page renders, live
values change while records stream in, no console errors. Screenshots go to the temp folder."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(tempfile.gettempdir()) / "ctxscope-screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


class Console:
    """Errors a page logged or threw; a test fails on any."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Console]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    console = Console(p)
    yield p, console
    context.close()


class Streamer:
    """Feeds telemetry of rising power into the store every 200 ms, as ingest would."""

    def __init__(self, feeder: Any, device: Any) -> None:
        self.feeder, self.device = feeder, device
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        power = 10.0
        while not self.stop.wait(0.2):
            power += 1.0
            self.feeder([self.device.telemetry(power_w=power, temp_c=40 + power / 10)])

    def __enter__(self) -> Streamer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def changes(page: Any, selector: str, timeout_ms: int = 5000) -> tuple[str, str]:
    before = page.locator(selector).inner_text()
    page.wait_for_function(
        "([sel, old]) => document.querySelector(sel).textContent !== old",
        arg=[selector, before],
        timeout=timeout_ms,
    )
    return before, page.locator(selector).inner_text()


@pytest.fixture
def two_devices(simfleet, feeder):
    orin, rtx = simfleet.SimDevice("orin-1"), simfleet.SimDevice("rtx-1")
    feeder([orin.meta(), orin.status("online", backlog=3, dropped=250), orin.telemetry(10.0, 40.0)])
    feeder(simfleet.sweep(orin))
    feeder([rtx.meta(24 * 2**30), rtx.status("busy", run_id="r2"), rtx.run_started("r2", 4)])
    feeder([rtx.result("r2", "qwen2.5-0.5b", "transformer", 1024, 5.0, 900.0), rtx.progress("r2", 1, 4)])
    return orin, rtx


def test_fleet_page_renders_and_follows_live_telemetry(served, page, two_devices, feeder):
    p, console = page
    p.goto(served.url + "/")
    p.wait_for_selector("#device-orin-1 td.power")
    p.wait_for_selector("#live.on")
    assert "2 of 2 online" in p.locator("#online-count").inner_text()
    assert p.locator("#running tbody tr").count() == 1
    # the spool column: what each status said, the drops marked; nothing where a status said nothing
    assert p.locator("#device-orin-1 td.spool.dropped").inner_text() == "3 queued · 250 dropped"
    assert p.locator("#device-rtx-1 td.spool").inner_text() == ""
    with Streamer(feeder, two_devices[0]):
        before, after = changes(p, "#device-orin-1 td.power")
        assert before != after and after.endswith(" W")
        shot(p, "fleet")
    latencies = p.evaluate("window.ctxscopeState.latenciesMs")
    assert latencies and max(latencies) < 5000
    assert console.errors == []


def test_device_page_renders_charts_tables_and_live_values(served, page, two_devices, feeder):
    p, console = page
    p.goto(served.url + "/devices/orin-1")
    p.wait_for_selector("#chart-ttft .main-svg")
    p.wait_for_selector("#chart-memory_peak .main-svg")
    p.wait_for_selector("#chart-prefill_energy_per_token .main-svg")
    p.wait_for_selector("#chart-operator_shares .main-svg")
    assert p.locator("#maxctx tbody tr").count() == 2
    assert "simulated_kernel" in p.locator("#unclassified tbody").inner_text()
    assert p.locator("#fits tbody tr").count() == 4  # TTFT and memory, two models each
    assert "qwen2.5-0.5b" in p.locator("#crossovers tbody").inner_text()
    p.wait_for_selector("#live.on")
    with Streamer(feeder, two_devices[0]):
        _, after = changes(p, "#power")
        assert after.endswith(" W")
    p.check("#reference")
    legend = "[...document.querySelectorAll('#chart-ttft .legendtext')]"
    p.wait_for_function(f"() => {legend}.some(t => t.textContent.startsWith('paper'))")
    shot(p, "device")
    assert console.errors == []


def test_fleet_page_shows_an_imported_run_as_unfinished_and_its_values_as_not_live(
    served, page, simfleet, feeder
):
    """A device known only from imported records (no status, no finish record) is not live: its run
    has no progress bar among the running plans, its power is the last value recorded."""
    p, console = page
    ref = simfleet.SimDevice("h200-reference")
    feeder([ref.run_started("r1", 30), ref.progress("r1", 15, 30, "qwen-1024"), ref.telemetry(179.0, 60.0)])
    p.goto(served.url + "/")
    p.wait_for_selector("#device-h200-reference td.power.not-live")
    assert "0 of 1 online" in p.locator("#online-count").inner_text()
    assert p.locator("#device-h200-reference td").nth(1).inner_text() == "unknown"
    assert p.locator("#device-h200-reference td.power").inner_text() == "179 W (recorded)"
    assert p.locator("#running tbody tr").count() == 0
    assert p.locator("#device-h200-reference progress").count() == 0
    assert p.locator("#unfinished tbody").inner_text().split("\t") == [
        "h200-reference",
        "r1",
        "15/30",
        "qwen-1024",
    ]
    assert p.locator("#unfinished progress").count() == 0
    shot(p, "fleet-imported")
    assert console.errors == []


def test_device_page_shows_a_search_without_a_limit_as_a_lower_bound(
    served, page, simfleet, feeder, result_factory
):
    p, console = page
    search = {"bounded_by": "max_tokens=128", "largest_ok": 128}
    dev = simfleet.SimDevice("orin-1")
    feeder(
        [
            dev.run_started("run-a", 3),
            dev.progress("run-a", 2, 3),
            result_factory(context_len=64, metrics={"ttft": ("ms", [1.0])}),
            result_factory(
                context_len=128,
                metrics={"max_context": ("tokens", [128])},
                details={"kind": "max_context", "search": search},
            ),
        ]
    )
    p.goto(served.url + "/devices/orin-1")
    p.wait_for_selector("#maxctx tbody tr")
    assert "≥ 128 tokens (no limit found up to max_tokens=128)" in p.locator("#maxctx tbody").inner_text()
    assert "unfinished (no finish record)" in p.locator("#runs tbody").inner_text()
    assert p.locator("#runs progress").count() == 0
    assert console.errors == []


def test_device_page_keeps_a_models_kernel_paths_apart(served, page, simfleet, feeder, result_factory):
    """One model measured on two attention paths: two max-context rows named by the path that tells
    them apart, each with its own path's memory fit (not one path's limit on both rows)."""
    p, console = page
    dev = simfleet.SimDevice("orin-1")
    feeder([dev.meta(16 * 2**30)])
    for attention, mib_per_token in (("sdpa", 0.16), ("flash", 0.03)):
        feeder(
            [
                result_factory(
                    context_len=n,
                    implementation={"runtime": "transformers", "attention": attention},
                    metrics={"ttft": ("ms", [n / 100]), "memory_peak": ("MiB", [1000 + mib_per_token * n])},
                )
                for n in (1024, 4096, 16384)
            ]
        )
    p.goto(served.url + "/devices/orin-1")
    p.wait_for_selector("#maxctx tbody tr")
    view = httpx.get(served.url + "/api/devices/orin-1").json()
    limits = {
        f["path"]: round(f["extrapolated_limit_tokens"]) for f in view["characterization"]["memory_fits"]
    }
    assert set(limits) == {"attention=sdpa", "attention=flash"} and len(set(limits.values())) == 2
    rows = p.locator("#maxctx tbody tr")
    assert rows.count() == 2
    for i in range(2):
        cells = rows.nth(i).locator("td").all_inner_texts()
        path = cells[0].removeprefix("qwen2.5-0.5b [").removesuffix("]")
        assert int(cells[6]) == limits[path]
    assert console.errors == []


def test_device_page_shows_results_that_arrive_while_open(served, page, two_devices, feeder):
    p, console = page
    p.goto(served.url + "/devices/rtx-1")
    p.wait_for_selector("#chart-ttft .main-svg")
    p.wait_for_selector("#live.on")
    assert p.locator("#maxctx tbody tr").count() == 1
    rtx = two_devices[1]
    feeder([rtx.result("r2", "mamba2-780m", "ssm", 1024, 9.0, 1500.0), rtx.progress("r2", 2, 4)])
    p.wait_for_function("() => document.querySelectorAll('#maxctx tbody tr').length === 2", timeout=5000)
    assert "2/4" in p.locator("#runs tbody").inner_text()
    assert console.errors == []


def test_compare_page_renders_both_devices(served, page, two_devices):
    p, console = page
    p.goto(served.url + "/compare?metric=ttft")
    p.wait_for_selector("#compare-chart .main-svg")
    p.wait_for_selector("#compare-table tbody tr")
    header = p.locator("#compare-table thead").inner_text()
    assert "orin-1" in header and "rtx-1" in header
    p.uncheck("input[name=devices][value=rtx-1]")
    p.wait_for_function("() => !document.querySelector('#compare-table thead').textContent.includes('rtx-1')")
    shot(p, "compare")
    assert console.errors == []


HOSTILE_MODEL = (
    '<a href="javascript:pwned=1">m</a><span style="font-size:90px">b</span><img src=x onerror=pwned=2>'
)


def test_device_supplied_markup_is_shown_as_text_in_charts_and_tables(served, page, feeder, result_factory):
    p, console = page
    feeder(
        [
            result_factory(
                model=model,
                context_len=n,
                metrics={"ttft": ("ms", [1.0 + n / 1e4]), "prefill_energy_per_token": ("J/token", [0.5])},
                implementation={"attention": '<a href="javascript:pwned=3">sdpa</a>'},
            )
            for model in (HOSTILE_MODEL, "qwen2.5-0.5b")  # two curves: plotly draws a legend
            for n in (1024, 2048)
        ]
    )
    p.goto(served.url + "/devices/orin-1")
    p.wait_for_selector("#chart-ttft .main-svg")
    p.wait_for_selector("#maxctx tbody tr")
    legend = p.locator("#chart-ttft .legendtext")
    assert f"{HOSTILE_MODEL} bf16" in legend.all_text_contents()
    charts = p.locator("#charts")
    assert charts.locator("a").count() == 0
    assert charts.locator("[style*='font-size: 90px'], [style*='font-size:90px']").count() == 0
    assert HOSTILE_MODEL in p.locator("#maxctx tbody").inner_text()
    assert p.evaluate("() => window.pwned") is None
    shot(p, "hostile-names")
    assert console.errors == []


def test_login_then_the_plan_form_sends_with_its_csrf_token(store, hub, page, feeder, simfleet, tmp_path):
    from ctxscope.collector.web.app import create_app
    from ctxscope.collector.web.auth import Credentials, hash_password
    from ctxscope.collector.web.security import WebSecurity
    from ctxscope.collector.web.server import WebServer

    feeder([simfleet.SimDevice("orin-1").meta()])
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('a long passphrase')}\n")
    security = WebSecurity(credentials=Credentials.load(users))
    server = WebServer(create_app(store, hub, None, security=security)).start()
    try:
        p, console = page
        p.goto(server.url + "/devices/orin-1")
        p.fill("input[name=username]", "alice")
        p.fill("input[name=password]", "a long passphrase")
        p.click("button[type=submit]")
        p.wait_for_url(server.url + "/devices/orin-1")
        p.wait_for_selector("#live.on")
        console.errors.clear()  # the login page's own 401s are behind us
        p.fill("#plan-text", 'name = "smoke"\nmodels = ["qwen2.5-0.5b"]\ncontext_lengths = [32]\n')
        p.click("#plan-form button")
        p.wait_for_function("() => document.getElementById('plan-result').textContent.startsWith('refused')")
        # Past the CSRF check: refused only because this collector has no broker.
        assert "no broker connection" in p.locator("#plan-result").inner_text()
        assert len(console.errors) == 1 and "503" in console.errors[0]
    finally:
        server.stop()


def test_the_report_draws_every_figure_offline(store, page, two_devices, tmp_path):
    """`ctxscope report`'s page in the browser from disk: its own plotly.js, every figure drawn."""
    from ctxscope.collector.report import build_report

    p, console = page
    p.route("http*://**", lambda route: route.abort())  # offline: nothing but the files beside it
    index = build_report(store, tmp_path / "report", formats=("csv",))
    p.goto(index.as_uri())
    figures = p.locator(".fig").count()
    assert figures >= 10  # two devices' TTFT, decode, memory, energy, shares...
    p.wait_for_function(f"() => document.querySelectorAll('.fig .main-svg').length >= {figures}")
    assert "orin-1: Time to first token" in p.locator("#orin-1-ttft").inner_text()
    shot(p, "report")
    assert console.errors == []
