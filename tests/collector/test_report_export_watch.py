"""The report, the exports and the terminal view over a real SQLite store."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from ctxscope.collector.export import export
from ctxscope.collector.readmodel import views
from ctxscope.collector.report import ReportError, report, write_pngs
from ctxscope.collector.store.rollups import Bucket, write_buckets
from ctxscope.collector.watch import _value, frame, watch


@pytest.fixture
def stored(simfleet, feeder, store, tmp_path: Path) -> str:
    dev = simfleet.SimDevice("orin-1")
    feeder([dev.meta(), dev.status("online"), dev.telemetry(12.0, 45.0)])
    feeder(simfleet.sweep(dev))
    feeder([dev.result("sim-run", "qwen2.5-0.5b", "transformer", 131072, 0.0, outcome="oom")])
    return f"sqlite:///{store.path}"


def test_csv_export_keeps_samples_and_leaves_unmeasured_empty(stored, tmp_path: Path):
    out = tmp_path / "export"
    result = CliRunner().invoke(export, ["--store", stored, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 9
    oom = next(r for r in rows if r["outcome"] == "oom")
    assert oom["ttft_median"] == ""  # not measured: empty, never 0
    first = next(r for r in rows if r["context_len"] == "1024" and r["model"] == "qwen2.5-0.5b")
    samples = json.loads(first["ttft_samples"])
    assert len(samples) == 5 and float(first["ttft_median"]) == pytest.approx(sorted(samples)[2])
    aggregates = list(csv.DictReader((out / "aggregates.csv").open()))
    assert {r["model"] for r in aggregates} == {"qwen2.5-0.5b", "mamba2-780m"}
    assert json.loads(next(r for r in aggregates if r["context_len"] == "131072")["outcomes"]) == {"oom": 1}


def test_export_writes_the_telemetry_rollups_kept_after_raw_telemetry_aged_out(store, tmp_path: Path):
    """A device's power and temperature over months live only in the rollups; export gives them with
    their units and bucket widths, minutes and hours alike. Without rollups, no such file."""
    out = tmp_path / "export"
    url = f"sqlite:///{store.path}"
    assert CliRunner().invoke(export, ["--store", url, "--out", str(out)]).exit_code == 0
    assert not (out / "telemetry_rollups.csv").exists()
    hour = 1_800_000_000 // 3600 * 3600 * 10**9
    buckets = {
        ("orin-1", "nvml", "power_w", hour): Bucket("W", 7200, 7200 * 41.5, 12.0, 230.0),
        ("orin-1", "nvml", "temp_gpu_c", hour + 3600 * 10**9): Bucket("C", 60, 60 * 51.0, 50.0, 52.0),
    }
    with store._transaction() as cur:
        write_buckets(store, cur, dict(list(buckets.items())[:1]), 3600)
        write_buckets(store, cur, dict(list(buckets.items())[1:]), 60)
    result = CliRunner().invoke(export, ["--store", url, "--out", str(out), "--device", "orin-1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "telemetry_rollups.csv").open()))
    assert [(r["channel"], r["unit"], r["bucket_s"], r["n"]) for r in rows] == [
        ("power_w", "W", "3600", "7200"),
        ("temp_gpu_c", "C", "60", "60"),
    ]
    assert (float(rows[0]["mean"]), float(rows[0]["min"]), float(rows[0]["max"])) == (41.5, 12.0, 230.0)
    assert (
        rows[0]["bucket_start_ns"] == str(hour) and rows[0]["bucket_start_utc"] == "2027-01-15T08:00:00+00:00"
    )
    parquet = CliRunner().invoke(
        export, ["--store", url, "--out", str(out), "--device", "orin-1", "--format", "parquet"]
    )
    assert parquet.exit_code == 0, parquet.output
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(out / "telemetry_rollups.parquet").to_pylist()
    assert [(r["channel"], r["bucket_s"], r["n"], r["mean"]) for r in table] == [
        ("power_w", 3600, 7200, 41.5),
        ("temp_gpu_c", 60, 60, 51.0),
    ]


def test_parquet_export_round_trips(stored, tmp_path: Path):
    pq = pytest.importorskip("pyarrow.parquet", reason="Parquet export needs pyarrow")
    out = tmp_path / "export"
    result = CliRunner().invoke(export, ["--store", stored, "--out", str(out), "--format", "parquet"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == 9
    assert next(r for r in table if r["outcome"] == "oom")["ttft_median"] is None


FIGURES = (
    "ttft",
    "decode_per_token",
    "memory_peak",
    "memory_split",
    "prefill_energy_per_token",
    "operator_shares",
)


def _plots(page: str) -> dict[str, list]:
    """Each embedded figure's traces, by its element id, read back from the page's script JSON."""
    calls = re.findall(r"Plotly\.newPlot\((\"[^\"]+\"), (\[.*?\]), (\{.*?\}), \{responsive: true\}\);", page)
    return {json.loads(div): json.loads(data) for div, data, _ in calls}


def test_report_embeds_the_dashboards_figures_and_opens_offline(stored, tmp_path: Path):
    out = tmp_path / "report"
    result = CliRunner().invoke(report, ["--store", stored, "--out", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    plots = _plots(page)
    assert set(plots) == {f"orin-1-{name}" for name in FIGURES}
    # the device page's figures, trace for trace
    from ctxscope.collector.readmodel.figures import device_figures
    from ctxscope.collector.store import open_store

    store = open_store(stored)
    try:
        expected = device_figures(views.device(store, "orin-1"))
    finally:
        store.close()
    assert {name: figure["data"] for name, figure in expected.items()} == {
        name: plots[f"orin-1-{name}"] for name in FIGURES
    }
    assert '<script src="plotly.min.js">' in page and (out / "plotly.min.js").stat().st_size > 1_000_000
    assert not list(out.glob("*.png"))  # PNGs only when asked for
    assert "131072 (oom)" in page  # first failure above the longest ok length
    maxctx = page.split("<h3>Maximum context</h3>")[1].split("</table>")[0]
    header, *rows = maxctx.split("<tr>")[1:]
    assert rows and all(row.count("<td>") == header.count("<th>") for row in rows)
    assert 'href="results.csv"' in page


@pytest.mark.browser
def test_report_png_writes_every_figure_through_a_headless_browser(stored, tmp_path: Path):
    pytest.importorskip("kaleido", reason="PNG figures need kaleido")
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    out = tmp_path / "report"
    result = CliRunner().invoke(report, ["--store", stored, "--out", str(out), "--format", "csv", "--png"])
    assert result.exit_code == 0, result.output
    for name in FIGURES:
        png = out / f"orin-1-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000  # a drawn figure, not an empty canvas
        assert png.name in (out / "index.html").read_text()


@pytest.mark.browser
def test_a_figure_whose_text_holds_a_nul_is_drawn_and_one_plotly_cannot_draw_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kaleido skips a figure plotly.js fails on (a device's name holding NUL did that) and goes on:
    the report once linked PNGs it never wrote and exited 0."""
    pytest.importorskip("kaleido", reason="PNG figures need kaleido")
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    nul = {"data": [{"type": "bar", "x": ["evil\x00-1"], "y": [1]}], "layout": {"title": {"text": "a\x00b"}}}
    write_pngs({tmp_path / "nul.png": nul})
    assert (tmp_path / "nul.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a figure plotly.js fails on: the same one, were its NULs not replaced
    monkeypatch.setattr("ctxscope.collector.report._visible_nul", lambda figure: figure)
    fine = {"data": [{"type": "bar", "x": ["a"], "y": [1]}], "layout": {}}
    with pytest.raises(ReportError, match=r"plotly.js could not draw 1 figure\(s\): broken.png"):
        write_pngs({tmp_path / "fine.png": fine, tmp_path / "broken.png": nul})
    assert (tmp_path / "fine.png").is_file()


def test_report_png_without_a_browser_fails_with_the_reason(stored, tmp_path: Path, monkeypatch):
    pytest.importorskip("kaleido", reason="PNG figures need kaleido")
    monkeypatch.setenv("PATH", str(tmp_path / "no-browsers-here"))
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))
    out = tmp_path / "report"
    result = CliRunner().invoke(report, ["--store", stored, "--out", str(out), "--format", "csv", "--png"])
    assert result.exit_code == 1
    assert "PNG figures need kaleido and a Chrome or Chromium" in result.output


def test_watch_once_prints_devices_runs_and_results(stored):
    result = CliRunner().invoke(watch, ["--store", stored, "--once"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "1 of 1 online" in result.output
    assert "12 W" in result.output and "45 °C" in result.output
    assert "mamba2-780m" in result.output and "oom" in result.output
    assert "MiB" in result.output  # memory in its canonical unit, whatever unit the agent sent
    assert re.search(r"IQR [0-9.e+-]+ ms", result.output)  # the spread carries its unit too


def test_watch_marks_a_stale_device_without_a_status(simfleet, feeder, store, monkeypatch):
    monkeypatch.setattr(views, "STALE_AFTER_S", -1.0)  # every device counts as silent for too long
    feeder([simfleet.SimDevice("bare-1").result("r", "qwen2.5-0.5b", "transformer", 1024, 1.0)])
    console = Console(record=True, width=200)
    console.print(frame(store))
    line = next(x for x in console.export_text().splitlines() if "bare-1" in x)
    assert "unknown (stale)" in line and "None" not in line  # no status received: as the web page says


HOSTILE_METRIC = '../../=HYPERLINK("http://x")/e'


@pytest.fixture
def hostile(feeder, store, result_factory) -> str:
    """Results whose device-supplied names are spreadsheet formulas and paths out of the out dir."""
    feeder(
        [
            result_factory(
                model=model,
                context_len=n,
                metrics={"ttft": ("ms", [1.0 + n / 1e4]), HOSTILE_METRIC: ("J/token", [0.5])},
            )
            for model in ("=cmd|' /C calc'!A0", "@SUM(1+1)")
            for n in (1024, 2048)
        ]
    )
    return f"sqlite:///{store.path}"


def test_csv_export_neutralises_formulas(hostile, tmp_path: Path):
    out = tmp_path / "export"
    result = CliRunner().invoke(export, ["--store", hostile, "--out", str(out)])
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open(newline="") as f:
        header, *rows = list(csv.reader(f))
    cells = header + [cell for row in rows for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert {r[header.index("model")] for r in rows} == {"'=cmd|' /C calc'!A0", "'@SUM(1+1)"}
    assert any(h.startswith("../../=HYPERLINK") for h in header)  # no formula prefix: left as it was
    assert float(rows[0][header.index("context_len")]) > 0  # numbers stay numbers


def test_report_keeps_hostile_metric_names_inside_the_out_dir(hostile, tmp_path: Path):
    out = tmp_path / "deep" / "report"
    result = CliRunner().invoke(report, ["--store", hostile, "--out", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.parts[:2] == ("deep", "report") for p in written if not p.name.startswith("collector.db")), (
        written
    )
    page = (out / "index.html").read_text()
    energy = [div for div in _plots(page) if "HYPERLINK" in div]
    assert len(energy) == 1 and "/" not in energy[0] and not energy[0].startswith(".")
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert scripts and not any("<" in script for script in scripts)  # nothing can close or bend them


def test_report_gives_a_search_without_a_limit_as_a_lower_bound(feeder, store, result_factory, tmp_path):
    search = {"bounded_by": "max_tokens=128", "largest_ok": 128}
    feeder(
        [
            result_factory(context_len=64, metrics={"ttft": ("ms", [1.0])}),
            result_factory(
                context_len=128,
                metrics={"max_context": ("tokens", [128])},
                details={"kind": "max_context", "memory_cap_bytes": 8 * 2**30, "search": search},
            ),
        ]
    )
    out = tmp_path / "report"
    url = f"sqlite:///{store.path}"
    result = CliRunner().invoke(report, ["--store", url, "--out", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    maxctx = (out / "index.html").read_text().split("<h3>Maximum context</h3>")[1].split("</table>")[0]
    assert "&gt;= 128 (no limit up to max_tokens=128), memory cap 8.0 GiB" in maxctx


def test_aggregates_export_says_how_each_pooled_figure_was_measured(stored, tmp_path: Path):
    """A number without its method is a bug: each aggregated metric names the methods of its samples."""
    out = tmp_path / "export"
    result = CliRunner().invoke(export, ["--store", stored, "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = list(csv.DictReader((out / "results.csv").open()))
    aggregates = list(csv.DictReader((out / "aggregates.csv").open()))
    row = next(r for r in aggregates if r["context_len"] == "1024" and r["model"] == "qwen2.5-0.5b")
    expected = {
        r["ttft_method"] for r in results if r["context_len"] == "1024" and r["model"] == "qwen2.5-0.5b"
    }
    assert set(json.loads(row["ttft_methods"])) == expected and expected


def test_a_metric_left_out_of_an_aggregate_says_why_in_the_export(result_factory):
    from ctxscope.collector.export import aggregate_rows

    a = result_factory(run_id="r1", metrics={"ttft": ("ms", [1, 2]), "decode_per_token": ("ms", [3.0])})
    b = result_factory(run_id="r2", metrics={"ttft": ("GiB", [1.0])})
    (row,) = aggregate_rows([a, b])
    assert "ttft_median" not in row and row["decode_per_token_median"] == 3.0
    (problem,) = json.loads(row["problems"])
    assert problem.startswith("ttft left out: cannot pool samples in units")


def test_report_crossovers_name_their_precision(feeder, store, result_factory, tmp_path):
    """Two precisions of one pair of models are two crossovers: each row says which it is."""
    rows = []
    for precision in ("bf16", "fp32"):
        for n, t_ms, s_ms in [(1024, 10, 20), (8192, 100, 50)]:
            rows.append(result_factory(model="qwen", precision=precision, context_len=n,
                                       metrics={"ttft": ("ms", [t_ms])}))  # fmt: skip
            rows.append(result_factory(model="mamba2", family="ssm", precision=precision, context_len=n,
                                       metrics={"ttft": ("ms", [s_ms])}))  # fmt: skip
    feeder(rows)
    out = tmp_path / "report"
    result = CliRunner().invoke(report, ["--store", f"sqlite:///{store.path}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = (out / "index.html").read_text().split("crossovers (TTFT)</h3>")[1].split("</table>")[0]
    assert "<th>precision</th>" in table
    assert "<td>bf16</td>" in table and "<td>fp32</td>" in table


def test_watch_says_which_results_are_no_measured_points(feeder, store, result_factory):
    """A search's answer, an operator profile and a calibration figure each carry a length, but are no
    point of a curve: the latest-results table names what each row is."""
    feeder(
        [
            result_factory(model="qwen2.5-0.5b", context_len=1024, metrics={"ttft": ("ms", [5.0])}),
            result_factory(
                model="mamba2-780m",
                context_len=262144,
                metrics={"max_context": ("tokens", [262144])},
                details={"kind": "max_context"},
            ),
            result_factory(model="mamba-130m", context_len=4096, details={"operators": {}}),
            result_factory(model="calib-stream", family="calibration", context_len=268435456),
        ]
    )
    console = Console(record=True, width=240)
    console.print(frame(store))
    lines = console.export_text().splitlines()
    kinds = {
        model: next(x for x in lines if f" {model} " in x)
        for model in ("qwen2.5-0.5b", "mamba2-780m", "mamba-130m", "calib-stream")
    }
    assert "point" in kinds["qwen2.5-0.5b"]
    assert "max-context search" in kinds["mamba2-780m"]
    assert "operator profile" in kinds["mamba-130m"]
    assert "calibration" in kinds["calib-stream"]


def test_watch_prints_values_without_exponents() -> None:
    assert [_value(v, "MiB") for v in (1210.4, 123456.0, 0.01234, 12.5, None)] == [
        "1,210 MiB", "123,456 MiB", "0.0123 MiB", "12.5 MiB", "–",
    ]  # fmt: skip
