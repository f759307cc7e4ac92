"""The reference characterization: the project's committed H200 results as one labelled device.

`results/` in a checkout holds the JSON-lines records of the sweeps and profiles run on an NVIDIA
H200 (see results/engine/README.md). Imported under the device id `h200-reference`, they sit in the
collector beside live devices, so curves, crossovers and energy of real model sizes are visible
before any device of one's own has measured anything. Imports are idempotent: doing it at every
start stores nothing new.
"""

from __future__ import annotations

from pathlib import Path

from ctxscope.collector.importer import ImportSummary, import_files
from ctxscope.collector.store import Store

REFERENCE_DEVICE = "h200-reference"
REFERENCE_DESCRIPTION = "committed NVIDIA H200 results (real model sizes), imported; not a live device"
# The record folders of results/: sweeps (engine) and operator profiles (profiling).
RESULT_FOLDERS = ("engine", "profiling")


def checkout_results() -> Path | None:
    """The `results/` folder of the checkout this package runs from, if it runs from one."""
    folder = Path(__file__).resolve().parents[1] / "results"
    return folder if folder.is_dir() else None


def reference_files(results: Path) -> list[Path]:
    """Every JSON-lines record file (plain or gzip) under the record folders of `results`."""
    return sorted(
        path for sub in RESULT_FOLDERS for path in (results / sub).glob("**/*.jsonl*") if path.is_file()
    )


def import_reference(store: Store, results: Path) -> ImportSummary:
    """Import the committed results under `REFERENCE_DEVICE`."""
    files = reference_files(results)
    if not files:
        raise FileNotFoundError(f"no JSON-lines record files under {results}/{{{','.join(RESULT_FOLDERS)}}}")
    return import_files(store, files, device=REFERENCE_DEVICE)
