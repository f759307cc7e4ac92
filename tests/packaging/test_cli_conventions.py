"""CLI conventions every command shares: -h, exit codes in --help, --log-level, full width when piped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CTXSCOPE = [sys.executable, "-c", "from ctxscope.cli import main; main()"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # stdout is a pipe here, as in `ctxscope ... | grep` (where the shell exports no COLUMNS).
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([*CTXSCOPE, *args], capture_output=True, text=True, timeout=120, env=env)


def test_h_is_help_everywhere_and_exit_codes_are_documented() -> None:
    top = _run("-h")
    assert top.returncode == 0 and "Exit codes:" in top.stdout and "130" in top.stdout
    for command in (["collector", "import"], ["collector", "prune"], ["agent", "models"]):
        sub = _run(*command, "-h")
        assert sub.returncode == 0 and sub.stdout.startswith("Usage: "), (command, sub.stderr)


def test_log_level_is_checked() -> None:
    bad = _run("--log-level", "chatty", "collector", "-h")
    assert bad.returncode == 2 and "chatty" in bad.stderr
    assert _run("--log-level", "DEBUG", "collector", "-h").returncode == 0


def test_piped_tables_are_not_cut_at_80_columns() -> None:
    listing = _run("agent", "models")
    assert listing.returncode == 0, listing.stderr
    assert max(len(line) for line in listing.stdout.splitlines()) > 80
    assert "…" not in listing.stdout, "a column was truncated"
    assert "availability" in listing.stdout


def test_import_summary_as_json_keeps_stdout_clean(tmp_path: Path) -> None:
    records = Path(__file__).resolve().parents[2] / "results/profiling/h200_autotune_check.jsonl"
    done = _run(
        "--log-level",
        "info",
        "collector",
        "import",
        "--json",
        "--store",
        f"sqlite:///{tmp_path / 'c.db'}",
        str(records),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 4  # stdout is the JSON alone; logs went to stderr


def test_watch_prints_the_fleet_as_json(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'c.db'}"
    records = Path(__file__).resolve().parents[2] / "results/profiling/h200_autotune_check.jsonl"
    assert _run("collector", "import", "-q", "--store", store, str(records)).returncode == 0
    done = _run("collector", "watch", "--json", "--store", store)
    assert done.returncode == 0, done.stderr
    assert [d["device"] for d in json.loads(done.stdout)["devices"]] == ["h200"]


def test_report_export_telemetry_and_status_print_json(tmp_path: Path) -> None:
    """Every listing and report command has --json, and its stdout is that JSON alone."""
    store = f"sqlite:///{tmp_path / 'c.db'}"
    records = Path(__file__).resolve().parents[2] / "results/profiling/h200_autotune_check.jsonl"
    assert _run("collector", "import", "-q", "--store", store, str(records)).returncode == 0
    exported = _run("collector", "export", "--json", "--store", store, "--out", str(tmp_path / "x"))
    assert exported.returncode == 0, exported.stderr
    assert all(Path(f).is_file() for f in json.loads(exported.stdout)["files"])
    reported = _run("report", "--json", "--format", "csv", "--store", store, "--out", str(tmp_path / "r"))
    assert reported.returncode == 0, reported.stderr
    answer = json.loads(reported.stdout)
    assert answer["index"].endswith("index.html") and answer["index"] in answer["files"]
    sampled = _run("agent", "telemetry", "--json", "--seconds", "0.3", "--rate-hz", "10")
    assert sampled.returncode == 0, sampled.stderr
    assert json.loads(sampled.stdout)["clock"] == "monotonic"
    missing = _run("agent", "status", "--json", "--device", "nobody-1", "--spool", str(tmp_path / "s.db"))
    assert missing.returncode == 2 and missing.stdout == ""  # no state file: said on stderr


def test_torch_device_and_device_id_are_not_confused() -> None:
    """`--torch-device` is cuda/cpu in the measuring commands; their old `--device cpu` is refused by name."""
    for command in (["agent", "run", "plan.toml"], ["agent", "maxctx", "m"], ["agent", "calibrate"],
                    ["agent", "profile", "m"]):  # fmt: skip
        refused = _run(*command, "--device", "cpu")
        assert refused.returncode == 2, (command, refused.stderr)
        assert "use --torch-device cpu" in refused.stderr, (command, refused.stderr)
        assert "--torch-device" in _run(*command[:2], "-h").stdout


def test_an_interrupt_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ctxscope -h` documents 130 for Ctrl-C; click alone would say "Aborted!" and exit 1, a failure."""
    from click.testing import CliRunner

    from ctxscope.agent.engine import plan as plans
    from ctxscope.cli import main

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(plans, "load", interrupted)
    plan = tmp_path / "plan.toml"
    plan.write_text('name = "x"\n')
    result = CliRunner().invoke(main, ["agent", "run", str(plan), "--torch-device", "cpu"])
    assert result.exit_code == 130, result.output
    assert "Interrupted." in result.output and "Aborted!" not in result.output
