"""The device page's History section in headless Chromium: a year of seeded rollups drawn as a line of
daily means in a minimum-maximum band, with its unit and bucket width, a break where the device was
off, a device-supplied unit shown as text, and an older request's failure kept off a newer one's note."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from ctxscope.collector.store import Store
from ctxscope.collector.store.buckets import Bucket
from ctxscope.collector.store.rollups import write_buckets
from tests.collector.web.test_browser import browser, page, shot  # noqa: F401 (fixtures)
from tests.collector.web.test_history_api import DAY, seed_year

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHART = "document.getElementById('history-chart')"
YEAR = "#history-section button[data-seconds='31536000']"
HOSTILE_UNIT = '<img src=x onerror="pwned=1">'


@pytest.fixture
def year_seeded(store: Store, feeder: Any, simfleet: Any) -> int:
    """orin-1 with a year of power rollups (seed_year); the "now" they end at."""
    now = time.time_ns()
    seed_year(store, feeder, simfleet, now)
    return now


def test_a_year_of_rollups_shows_as_daily_means_in_a_band(
    served: Any,
    page: Any,  # noqa: F811
    year_seeded: int,
) -> None:
    p, console = page
    p.goto(served.url + "/devices/orin-1")
    p.wait_for_function(f"() => {CHART}.data && {CHART}.data.length === 2")  # the last 24 h first
    assert p.evaluate(f"{CHART}.layout.xaxis.title.text") == "time (buckets of 5 min)"
    p.click(YEAR)
    p.wait_for_function(f"() => {CHART}.layout.xaxis.title.text === 'time (buckets of 1 d)'")
    assert p.locator("#history-note").text_content() == "", "the loading note stays after the answer"
    band, mean = (p.evaluate(f"{CHART}.data[{i}].y") for i in range(2))
    days = [m for m in mean if m is not None]
    assert len(days) > 350
    assert mean.count(None) == band.count(None) == 2, "the week the device was off is drawn through"
    assert all(10 <= m <= 30 for m in days), "a gap drawn as a zero, or a mean not of the seeded rollups"
    assert min(v for v in band if v is not None) == pytest.approx(min(days) - 5, abs=0.5)
    assert max(v for v in band if v is not None) == pytest.approx(max(days) + 5, abs=0.5)
    assert p.locator("#history-chart .ytitle").text_content() == "W"
    legend = p.locator("#history-chart .legendtext").all_text_contents()
    assert "power_w mean per 1 d (W)" in legend and "min–max per 1 d" in legend
    shot(p, "history-year")
    assert console.errors == []


def test_a_device_supplied_unit_is_shown_as_text(
    served: Any,
    page: Any,  # noqa: F811
    store: Store,
    year_seeded: int,
) -> None:
    with store._transaction() as cur:
        hostile = {("orin-1", "jtop", "fan", year_seeded - 100 * DAY): Bucket(HOSTILE_UNIT, 1, 5.0, 5.0, 5.0)}
        write_buckets(store, cur, hostile, 3600)
    p, console = page
    p.goto(served.url + "/devices/orin-1")
    p.wait_for_function("() => document.getElementById('history-channel').options.length === 3")
    p.select_option("#history-channel", label=f"fan (jtop, {HOSTILE_UNIT})")
    p.click(YEAR)
    # the chart has no `data` until plotly first draws it: a predicate that throws ends the wait
    p.wait_for_function(f"() => {CHART}.data?.[1]?.name.startsWith('fan')")
    assert p.locator("#history-chart .ytitle").text_content() == HOSTILE_UNIT
    assert p.locator("#history-section img").count() == 0
    assert p.evaluate("() => window.pwned") is None
    assert console.errors == []


def test_an_older_request_that_fails_leaves_the_newer_ones_loading_note(
    served: Any,
    page: Any,  # noqa: F811
    year_seeded: int,
) -> None:
    p, console = page
    held: list[Any] = []
    p.route(re.compile(r"/history\?"), lambda route: held.append(route))

    def requests_held(count: int) -> None:
        for _ in range(200):
            if len(held) >= count:
                return
            p.wait_for_timeout(25)
        raise AssertionError(f"{len(held)} history requests, not {count}")

    p.goto(served.url + "/devices/orin-1")
    requests_held(1)  # the last 24 h, held
    p.click(YEAR)
    requests_held(2)
    held[0].fulfill(status=503, json={"detail": "busy"})
    p.wait_for_timeout(300)
    note = p.locator("#history-note")
    assert note.text_content().startswith("loading power_w over the last"), note.text_content()
    held[1].continue_()
    p.wait_for_function(f"() => {CHART}.data && {CHART}.layout.xaxis.title.text === 'time (buckets of 1 d)'")
    assert note.text_content() == ""
    assert [e for e in console.errors if "503" not in e] == []
