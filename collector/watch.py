"""`ctxscope collector watch`: a live terminal view (rich) of devices, runs and latest results.

For headless hosts: reads the same store and the same view shapes as the web dashboard, refreshing
every `--interval` seconds; `--once` prints a single frame and exits.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ctxscope.collector.aggregate.points import is_calibration, is_profile, is_search
from ctxscope.collector.aggregate.stats import summarize
from ctxscope.collector.readmodel import views
from ctxscope.collector.settings import open_for_reading
from ctxscope.collector.shrunk import labelled_results
from ctxscope.collector.store import Store, StoreOpenError, StoreURLError
from ctxscope.shared.messages import Metric, PointResult

LATEST_RESULTS = 12


def result_kind(result: PointResult) -> str:
    """What a result row is: a measured point, or a record that only looks like one (its length is a
    search's answer, a profiled length, or a calibration benchmark's size)."""
    if is_calibration(result):
        return "calibration"
    if is_search(result):
        return "max-context search"
    if is_profile(result):
        return "operator profile"
    return "point"


def _age(seconds: float) -> str:
    if seconds < 2:
        return "now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _value(value: float | None, unit: str) -> str:
    """Three significant digits below 1000, whole numbers above, never in exponent form: 1,210 MiB, not
    1.21e+03 MiB."""
    if value is None:
        return "–"
    return f"{value:,.0f} {unit}" if abs(value) >= 1000 else f"{value:.3g} {unit}"


def _progress(run: dict[str, Any] | None) -> str:
    if run is None or run["total"] is None:
        return ""
    done, total = run["done"] or 0, run["total"]
    filled = int(20 * done / total) if total else 0
    return f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{total}"


def _median(metric: dict[str, Any] | None) -> str:
    """Median of a stored metric in its canonical unit (ms, MiB, J...), with its IQR and n."""
    if not metric:
        return "–"
    summary = summarize([Metric.model_validate(metric)])
    if summary.n == 1:
        return _value(summary.median, summary.unit)
    return f"{_value(summary.median, summary.unit)} (IQR {_value(summary.iqr, summary.unit)}, n={summary.n})"


def frame(store: Store) -> Group:
    """One frame of the view, from the store as it is now."""
    fleet = views.fleet(store)
    running = {r["device"]: r for r in fleet["running"]}
    devices = Table(title=f"Devices ({fleet['online']} of {len(fleet['devices'])} online)", expand=True)
    for column in ("device", "state", "last seen", "power", "temperature", "run", "progress"):
        devices.add_column(column, justify="right" if column in ("power", "temperature") else "left")
    for d in fleet["devices"]:
        state = d["state"] or "unknown"  # no status received (an imported device), as the web page says
        style = {"online": "green", "busy": "cyan", "offline": "red"}.get(state, "")
        run = running.get(d["device"])
        devices.add_row(
            d["device"],
            (f"[{style}]{state}[/]" if style else state) + (" (stale)" if d["stale"] else ""),
            _age(d["last_seen_age_s"]),
            _value(d["telemetry"].get("power_w"), "W"),
            _value(d["telemetry"].get("temperature_c"), "°C"),
            run["run_id"] if run else "",
            _progress(run),
        )
    results = Table(title="Latest results", expand=True)
    columns = ("device", "run", "kind", "model", "precision", "context", "outcome", "TTFT", "peak memory")
    for column in columns:
        results.add_column(column)
    latest = sorted(
        (row for d in fleet["devices"] for row in labelled_results(store, d["device"])[-LATEST_RESULTS:]),
        key=lambda r: r["ts"],
    )[-LATEST_RESULTS:]
    for r in reversed(latest):
        results.add_row(
            r["device"],
            r["run_id"],
            result_kind(PointResult.model_validate(r)),
            r["model"],
            r["precision"],
            str(r["context_len"]),
            r["outcome"],
            _median(r["metrics"].get("ttft")),
            _median(r["metrics"].get("memory_peak")),
        )
    return Group(devices, results)


@click.command()
@click.option("--store", "store_url", default=None, help="sqlite:///PATH or postgresql://USER@HOST/DB.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the fleet (devices, live values, runs) as JSON once and exit.",
)
def watch(store_url: str | None, interval: float, once: bool, as_json: bool) -> None:
    """Live terminal view of devices, runs and latest results."""
    try:
        store = open_for_reading(store_url)
    except (StoreURLError, StoreOpenError) as exc:
        raise click.ClickException(str(exc)) from exc
    console = Console()
    try:
        if as_json:
            click.echo(json.dumps(views.fleet(store), indent=2))
            return
        if once:
            console.print(frame(store))
            return
        with Live(frame(store), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(store))
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
