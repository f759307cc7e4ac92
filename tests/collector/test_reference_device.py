"""The committed GPU results as reference devices: one device per card, never two cards pooled."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ctxscope.collector.reference_device import (
    card_device,
    card_of,
    checkout_results,
    import_reference,
    reference_devices,
)
from ctxscope.collector.store import Store
from ctxscope.shared.messages import PointResult
from tests.support import result_fields


@pytest.mark.parametrize(
    ("card", "device"),
    [
        ("NVIDIA H200", "h200-reference"),
        ("NVIDIA H100 80GB HBM3", "h100-reference"),
        ("NVIDIA GeForce RTX 4090", "geforce-rtx-4090-reference"),
        ("Orin (nvgpu)", "orin-nvgpu-reference"),
    ],
)
def test_a_card_names_its_reference_device(card: str, device: str) -> None:
    assert card_device(card) == device


def _records(path: Path, card: str | None, stream: str, n: int) -> None:
    lines = [
        PointResult(
            device="vm", stream=stream, seq=i + 1, ts=1_700_000_000_000_000_000 + i,
            manifest={"gpu": {"name": card}} if card else {}, **result_fields(i),
        ).model_dump_json()
        for i in range(n)
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def test_each_cards_records_are_imported_under_its_own_device(store: Store, tmp_path: Path) -> None:
    """H100 records committed beside the H200's were once imported as `h200-reference`, pooling two
    cards' samples in one device's curves."""
    engine = tmp_path / "results" / "engine"
    (engine / "h200").mkdir(parents=True)
    (engine / "h100").mkdir()
    _records(engine / "h200" / "curves.jsonl", "NVIDIA H200", "00000000000000a1", 3)
    _records(engine / "h100" / "curves.jsonl.gz", "NVIDIA H100 80GB HBM3", "00000000000000b1", 2)
    _records(engine / "cpu.jsonl", None, "00000000000000c1", 1)
    imports, unnamed = import_reference(store, tmp_path / "results")
    stored = {d.device: s.stored for d, s in imports}
    assert stored == {"h200-reference": 3, "h100-reference": 2}
    described = {d.device: d.description for d, _ in imports}
    assert described["h100-reference"].startswith("committed NVIDIA H100 80GB HBM3 results")
    assert unnamed == [engine / "cpu.jsonl"]
    assert len(store.results("h200-reference")) == 3 and len(store.results("h100-reference")) == 2
    again, _ = import_reference(store, tmp_path / "results")  # idempotent
    assert [s.stored for _, s in again] == [0, 0]


def test_a_damaged_or_binary_file_is_left_out_instead_of_stopping_the_start(tmp_path: Path) -> None:
    """A truncated gzip record file (or bytes that are not text) once raised out of the card lookup
    and stopped the demo's start with a traceback; the importer itself skips such lines."""
    engine = tmp_path / "results" / "engine"
    engine.mkdir(parents=True)
    _records(engine / "h200.jsonl", "NVIDIA H200", "00000000000000a1", 1)
    good = gzip.compress(b'{"manifest": {"gpu": {"name": "NVIDIA H100"}}}\n' * 50)
    (engine / "cut.jsonl.gz").write_bytes(good[:12])  # the header and no complete line
    (engine / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    assert card_of(engine / "cut.jsonl.gz") is None
    devices, unnamed = reference_devices(tmp_path / "results")
    assert [d.device for d in devices] == ["h200-reference"]
    assert sorted(p.name for p in unnamed) == ["binary.jsonl", "cut.jsonl.gz"]


def test_two_cards_of_one_model_token_keep_their_whole_names(tmp_path: Path) -> None:
    engine = tmp_path / "results" / "engine"
    engine.mkdir(parents=True)
    _records(engine / "sxm.jsonl", "NVIDIA H100 80GB HBM3", "00000000000000a1", 1)
    _records(engine / "pcie.jsonl", "NVIDIA H100 PCIe", "00000000000000b1", 1)
    _records(engine / "h200.jsonl", "NVIDIA H200", "00000000000000c1", 1)
    devices, _ = reference_devices(tmp_path / "results")
    assert {d.device for d in devices} == {
        "h100-80gb-hbm3-reference", "h100-pcie-reference", "h200-reference"
    }  # fmt: skip


def test_the_committed_results_of_each_card_stay_apart() -> None:
    results = checkout_results()
    assert results is not None
    devices, _ = reference_devices(results)
    by_device = {d.device: d for d in devices}
    assert {"h200-reference", "h100-reference"} <= set(by_device)
    for device in devices:
        assert all(card_of(path) == device.card for path in device.files)
