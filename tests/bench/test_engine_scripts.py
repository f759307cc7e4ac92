"""The engine's GPU benchmark scripts, run on the CPU with tiny or shortened models: their measurement
code paths, not their figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bench_scripts import load_bench


def test_study_memory_tracks_the_peak_of_the_storages_operators_create() -> None:
    study = load_bench("engine/study_memory.py")
    kept = torch.ones(1000)  # existed before: not counted
    tracker = study.StoragePeak([kept])
    with tracker:
        a = kept * 2  # 4,000 B
        b = a + 1  # 8,000 B alive
        del a  # 4,000 B
        c = b.view(-1)[:10]  # a view of b: no new storage
        d = torch.zeros(500)  # 6,000 B
    assert tracker.peak == 8000
    assert tracker.live == 6000
    del b, c, d


def test_study_memory_breaks_a_prefill_down_in_the_studys_terms() -> None:
    study = load_bench("engine/study_memory.py")
    model = study.build("qwen2.5-0.5b", "cpu", layers=1)
    length = 64
    tokenizer_mask, no_mask = (study.probe(model, length, mask, "cpu") for mask in ("tokenizer", "none"))
    config = json.loads((study.CONFIGS / "qwen2.5-0.5b.json").read_text())
    logits = length * config["vocab_size"] * 2  # bf16, every position
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    cache = 2 * length * config["num_key_value_heads"] * head_dim * 2  # one layer's keys and values
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    for row in (tokenizer_mask, no_mask):
        assert row["outcome"] == "ok"
        assert row["logits_bytes"] == logits
        assert row["cache_bytes"] == cache
        # the logits, cache and weights are alive at the end of the forward: the peak holds them all
        assert row["cpu_tracked_peak_bytes"] >= weights + logits + cache
        assert row["sdpa_calls"] == 1
    # an all-ones mask is recognised as causal: SDPA gets no materialized mask in either case
    assert tokenizer_mask["distinct_mask_bytes"] == no_mask["distinct_mask_bytes"] == 0


def test_prefill_against_direct_calls_times_a_transformers_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parity = load_bench("engine/prefill_vs_native.py")
    out = tmp_path / "parity.json"
    argv = ["prefill_vs_native.py", "--model", "qwen2.5-0.5b", "--length", "32", "--precision", "fp32"]
    monkeypatch.setattr(sys, "argv", [*argv, "--dry-run", "--out", str(out)])
    parity.main()
    report = json.loads(out.read_text())
    for label in ("hf_direct_ms", "hf_direct_no_cache_ms", "hf_transformers_sdpa_ms"):
        assert report[label]["median_ms"] > 0 and len(report[label]["samples_ms"]) >= 5
    assert report["agent_ttft_ms"]["median_ms"] > 0
    assert "agent/it" in capsys.readouterr().out


def _point(model: str, length: int, decode_ms: float, outcome: str = "ok") -> dict[str, object]:
    metrics = {
        "decode_per_token": {"unit": "ms", "samples": [decode_ms, decode_ms + 0.002, decode_ms + 0.001]},
        "decode_floor": {"unit": "ms", "samples": [decode_ms / 2]},
        "ttft": {"unit": "ms", "samples": [10.0, 12.0, 11.0]},
    }
    return {
        "kind": "result",
        "model": model,
        "context_len": length,
        "outcome": outcome,
        "error": None if outcome == "ok" else "CUDA out of memory",
        "metrics": metrics if outcome == "ok" else {},
        "implementation": {"decode_path": "compiled_cuda_graph_static_cache"},
        "manifest": {"git_revision": "abc1234"},
        "details": {},
    }


def test_curves_table_reads_archives_and_finds_where_the_ssm_overtakes(tmp_path: Path) -> None:
    import tarfile

    table = load_bench("engine/curves_table.py")
    qwen = [_point("qwen2.5-0.5b", n, ms) for n, ms in ((4096, 1.0), (32768, 1.5), (131072, 3.0))]
    mamba = [_point("mamba2-780m", n, 1.6) for n in (4096, 32768, 131072)]
    (tmp_path / "curves-qwen2.5-0.5b.jsonl").write_text("\n".join(json.dumps(r) for r in qwen) + "\n")
    inner = tmp_path / "curves-mamba2-780m.jsonl"
    inner.write_text("\n".join(json.dumps(r) for r in [*mamba, _point("mamba2-780m", 1 << 20, 0, "oom")]))
    with tarfile.open(tmp_path / "curves-mamba2-780m.tgz", "w:gz") as archive:
        archive.add(inner, arcname="./curves-mamba2-780m.jsonl")
    inner.unlink()
    found = table.points(tmp_path)
    assert [(r["model"], r["context_len"]) for r in found][-1] == ("qwen2.5-0.5b", 131072)
    rows = table.point_rows(found)
    assert "| mamba2-780m | 1024K | oom: CUDA out of memory |" in "\n".join(rows)
    assert "| qwen2.5-0.5b | 4K | 11.0 | 1.001 (0.0010) |" in "\n".join(rows)
    assert "| 2.00 |" in rows[2]  # the step against its floor
    crossing = table.crossover_rows(found)[2]
    assert crossing.startswith("| qwen2.5-0.5b | mamba2-780m | ~") and "between 32K and 128K" in crossing


def test_curves_table_crosses_over_on_the_newest_point_at_a_length(tmp_path: Path) -> None:
    """Two runs of one model at one length (earlier code, then dependent launch): the newest measured
    counts, whichever file is read last, and each point's row says whether it launched dependently."""
    table = load_bench("engine/curves_table.py")
    newer = {"ts": 2, "implementation": {"decode_dependent_launch": "programmatic dependent launch (...)"}}
    llama_new = {**_point("llama3.2-1b", 32768, 1.0), **newer}
    llama_old = {**_point("llama3.2-1b", 32768, 2.0), "ts": 1}  # slower: would cross before 32K
    llama_4k = {**_point("llama3.2-1b", 4096, 0.5), "ts": 1}
    mamba = [{**_point("mamba2-780m", n, 1.5), "ts": 1} for n in (4096, 32768)]
    (tmp_path / "a-new.jsonl").write_text(json.dumps(llama_new) + "\n")
    (tmp_path / "b-old.jsonl").write_text("\n".join(json.dumps(r) for r in (llama_old, llama_4k, *mamba)))
    found = table.points(tmp_path)
    assert table.crossover_rows(found)[2] == "| llama3.2-1b | mamba2-780m | no crossover up to 32K |"
    pdl = [
        row.split(" | ")[9] for row in table.point_rows(found)[2:] if row.startswith("| llama3.2-1b | 32K |")
    ]
    assert sorted(pdl) == ["-", "on"]


def test_the_curves_script_refuses_to_run_without_a_revision(tmp_path: Path) -> None:
    """Without CTXSCOPE_GIT_REVISION the check above was skipped, and records named the device copy's
    stale revision again; the script now asks for it before measuring anything."""
    script = Path(__file__).resolve().parents[2] / "bench" / "h200_curves_fair.sh"
    env = {k: v for k, v in os.environ.items() if k != "CTXSCOPE_GIT_REVISION"}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", OUT=str(tmp_path))
    done = subprocess.run(
        ["bash", str(script), "qwen2.5-0.5b@4096:10"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "set CTXSCOPE_GIT_REVISION" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_curves_script_refuses_a_package_stamped_with_another_revision(tmp_path: Path) -> None:
    """Records once named the device copy's stale git revision: the package had been installed before
    the revision was set. The script now stops before measuring anything."""
    script = Path(__file__).resolve().parents[2] / "bench" / "h200_curves_fair.sh"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OUT": str(tmp_path),
        "CTXSCOPE_GIT_REVISION": "0" * 40,
    }
    done = subprocess.run(
        ["bash", str(script), "qwen2.5-0.5b@4096:10"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert f"not {'0' * 40}: reinstall it with CTXSCOPE_GIT_REVISION set" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing recorded


def test_the_curves_script_sets_the_processes_per_short_point_from_spread(tmp_path: Path) -> None:
    """SPREAD=3 measures the points at or below 16K in three fresh processes; without it the plan keeps
    one process per point. Run with stand-ins for python3, nvidia-smi and ctxscope that keep the plan."""
    script = Path(__file__).resolve().parents[2] / "bench" / "h200_curves_fair.sh"
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    stand_ins = {
        "python3": '[ "$1" = -c ] && echo "$CTXSCOPE_GIT_REVISION"; exit 0',
        "nvidia-smi": "echo 'name, driver_version'",
        "ctxscope": 'cp "$3" "$OUT/seen-$SPREAD_LABEL.toml"; : >"$5"',
    }
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    for spread in ("3", ""):
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "OUT": str(out),
            "CTXSCOPE_GIT_REVISION": "1" * 40,
            "SPREAD_LABEL": spread or "default",
            **({"SPREAD": spread} if spread else {}),
        }
        done = subprocess.run(
            ["bash", str(script), "qwen2.5-0.5b@4096:10"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    assert "spread_processes = 3\n" in (out / "seen-3.toml").read_text()
    assert "spread_processes = 1\n" in (out / "seen-default.toml").read_text()
    assert "context_lengths = [4096]\n" in (out / "seen-3.toml").read_text()
    first_command = (out / "command.txt").read_text().splitlines()[0]
    assert first_command.startswith("SPREAD=3 bash bench/h200_curves_fair.sh")
