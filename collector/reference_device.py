"""The reference characterizations: the project's committed GPU results, one labelled device per card.

`results/` in a checkout holds the JSON-lines records of the sweeps and profiles run on an NVIDIA
H200 and, since that card was not always lent, on an H100 (see results/engine/README.md). Each
file is imported under the device id of the card its records name (`h200-reference`,
`h100-reference`), so that curves of two cards never pool as one device's, and they sit in the
collector beside live devices: curves, crossovers and energy of real model sizes are visible before
any device of one's own has measured anything. Imports are idempotent: doing it at every start
stores nothing new.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ctxscope.collector.importer import GZIP_ERRORS, ImportSummary, import_files, open_record_file
from ctxscope.collector.store import Store

REFERENCE_SUFFIX = "-reference"
# The record folders of results/: sweeps (engine) and operator profiles (profiling).
RESULT_FOLDERS = ("engine", "profiling")


@dataclass(frozen=True)
class ReferenceDevice:
    """The committed files of one card, and the device id they are imported under."""

    card: str
    device: str
    files: tuple[Path, ...]

    @property
    def description(self) -> str:
        return f"committed {self.card} results (real model sizes), imported; not a live device"


def card_device(card: str, whole: bool = False) -> str:
    """`NVIDIA H100 80GB HBM3` -> `h100-reference`: the card's model token (letters then digits), else
    (or with `whole`) its whole name, in the device-id alphabet."""
    name = re.sub(r"^nvidia\s+", "", card.strip().lower())
    token = None if whole else re.search(r"\b[a-z]+\d+[a-z]*\b", name)
    slug = token.group(0) if token else re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return (slug or "unknown-card") + REFERENCE_SUFFIX


def checkout_results() -> Path | None:
    """The `results/` folder of the checkout this package runs from, if it runs from one."""
    folder = Path(__file__).resolve().parents[1] / "results"
    return folder if folder.is_dir() else None


def reference_files(results: Path) -> list[Path]:
    """Every JSON-lines record file (plain or gzip) under the record folders of `results`."""
    return sorted(
        path for sub in RESULT_FOLDERS for path in (results / sub).glob("**/*.jsonl*") if path.is_file()
    )


def card_of(path: Path) -> str | None:
    """The GPU the file's records were measured on (the first manifest that names one), or None, also
    for a file that cannot be read (a damaged gzip stream, a file gone): the import says no more of it."""
    try:
        raw, stream = open_record_file(path)
        with raw, stream:
            for line in stream:
                try:
                    record = json.loads(line)
                except ValueError:  # not JSON, not UTF-8
                    continue
                manifest = record.get("manifest") if isinstance(record, dict) else None
                gpu = manifest.get("gpu") if isinstance(manifest, dict) else None
                name = gpu.get("name") if isinstance(gpu, dict) else None
                if isinstance(name, str) and name.strip():
                    return name.strip()
    except (OSError, *GZIP_ERRORS):
        return None
    return None


def reference_devices(results: Path) -> tuple[list[ReferenceDevice], list[Path]]:
    """The committed files grouped by card (most files first), and those that name no card (or
    cannot be read)."""
    by_card: dict[str, list[Path]] = {}
    unnamed: list[Path] = []
    for path in reference_files(results):
        card = card_of(path)
        if card is None:
            unnamed.append(path)
        else:
            by_card.setdefault(card, []).append(path)
    short = Counter(card_device(card) for card in by_card)
    devices = [  # two cards of one model token (an H100 SXM and an H100 PCIe) keep their whole names
        ReferenceDevice(card, card_device(card, whole=short[card_device(card)] > 1), tuple(files))
        for card, files in by_card.items()
    ]
    return sorted(devices, key=lambda d: (-len(d.files), d.card)), unnamed


def import_reference(
    store: Store, results: Path
) -> tuple[list[tuple[ReferenceDevice, ImportSummary]], list[Path]]:
    """Import the committed results, each card's under its own reference device; also the files left
    out because they name no card."""
    devices, unnamed = reference_devices(results)
    if not devices:
        raise FileNotFoundError(
            f"no JSON-lines record files naming a GPU under {results}/{{{','.join(RESULT_FOLDERS)}}}"
        )
    return [(device, import_files(store, device.files, device=device.device)) for device in devices], unnamed
