"""The sdpa-gqa attention path: same outputs as transformers' sdpa, decode logits equal to a full
recompute with eager attention, and the calibrated backend recorded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ctxscope.agent.engine import attention, decoding, hf_decode, point
from tests.bench_scripts import load_bench


def _agreement() -> object:
    return load_bench("engine/decode_agreement.py")


@pytest.fixture(autouse=True)
def _uncalibrated() -> object:
    yield
    attention.reset()


@pytest.mark.parametrize("q_len", [1, 7])
def test_matches_transformers_sdpa_with_a_float_mask(q_len: int) -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 6, q_len, 16, generator=generator)
    k = torch.randn(1, 2, 20, 16, generator=generator)
    v = torch.randn(1, 2, 20, 16, generator=generator)
    mask = torch.zeros(1, 1, q_len, 20)
    mask[..., 15:] = torch.finfo(torch.float32).min
    layer = SimpleNamespace(num_key_value_groups=3, is_causal=True)
    want, _ = sdpa_attention_forward(layer, q, k, v, mask)  # type: ignore[arg-type]
    got, _ = attention.sdpa_gqa_forward(layer, q, k, v, mask)  # type: ignore[arg-type]
    assert got.shape == want.shape == (1, q_len, 6, 16)
    assert float((got - want).abs().max()) < 1e-5
    as_bool, _ = attention.sdpa_gqa_forward(layer, q, k, v, mask == 0)  # type: ignore[arg-type]
    assert float((as_bool - want).abs().max()) < 1e-5


def test_causal_prefill_matches_transformers_sdpa() -> None:
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 9, 8, generator=generator)
    k = torch.randn(1, 1, 9, 8, generator=generator)
    v = torch.randn(1, 1, 9, 8, generator=generator)
    layer = SimpleNamespace(num_key_value_groups=4, is_causal=True)
    want, _ = sdpa_attention_forward(layer, q, k, v, None)  # type: ignore[arg-type]
    got, _ = attention.sdpa_gqa_forward(layer, q, k, v, None)  # type: ignore[arg-type]
    assert float((got - want).abs().max()) < 1e-5


def test_gqa_never_copies_keys_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, bool]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
        seen.append((k.shape[1], bool(kwargs.get("enable_gqa"))))
        return real(q, k, v, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    layer = SimpleNamespace(num_key_value_groups=3, is_causal=True)
    q, k, v = torch.randn(1, 6, 1, 16), torch.randn(1, 2, 20, 16), torch.randn(1, 2, 20, 16)
    attention.sdpa_gqa_forward(layer, q, k, v, torch.zeros(1, 1, 1, 20))  # type: ignore[arg-type]
    assert seen == [(2, True)]


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "zamba2-1.2b"])
def test_static_decode_agrees_with_full_recompute(name: str) -> None:
    agreement = _agreement()
    session = point.Session(point.ModelChoice(name, "fp32", "cpu", tiny=True, attention="sdpa-gqa"))
    assert session.module.config._attn_implementation == attention.ATTENTION_NAME
    record = session.implementation()
    assert record["attention_mode"] == "sdpa-gqa"
    assert record["attention_gqa"].startswith("native")
    assert record["attention_backend_decode"] in {b.name.lower() for b in attention.CANDIDATES}
    assert "attention_trial_decode/math" not in record  # times pool nothing: they are in the details
    trials = session.attention_trials
    assert trials[f"decode/{record['attention_backend_decode']}"].endswith(tuple("0123456789"))
    ids = decoding.synthetic_prompt(session.vocab_size, 24, seed=0, device=session.device)
    with torch.inference_mode():
        reference = agreement.reference_logits(session.module, ids, 4)  # type: ignore[attr-defined]
        assert session.module.config._attn_implementation == attention.ATTENTION_NAME
        decoder = hf_decode.HFStaticDecoder(session.module, ids, 5, graph=False)
        rows = agreement.compare(decoder, reference, True)  # type: ignore[attr-defined]
    assert len(rows) == 4
    assert all(r["same_argmax"] for r in rows)
    ranked = [r.flatten().sort(descending=True).values for r in reference[1:]]
    assert [r["reference_top2_margin"] for r in rows] == pytest.approx([float(v[0] - v[1]) for v in ranked])
    assert max(r["max_abs_diff"] for r in rows) < 1e-4


def test_transformers_default_stays_available() -> None:
    session = point.Session(
        point.ModelChoice("qwen2.5-0.5b", "fp32", "cpu", tiny=True, attention="transformers-sdpa")
    )
    assert session.module.config._attn_implementation == "sdpa"
    assert session.implementation()["attention_mode"] == "transformers-sdpa"
    assert "attention_backend_decode" not in session.implementation()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="attention must be one of"):
        attention.attn_implementation("flash", "qwen2")  # type: ignore[arg-type]


def test_models_without_the_interface_keep_their_attention() -> None:
    assert attention.attn_implementation("sdpa-gqa", "gpt_neo") is None
    assert attention.attn_implementation("sdpa-gqa", "mamba2") is None


def test_trials_say_how_they_were_timed() -> None:
    shape = attention.Shape(heads=4, kv_heads=2, head_dim=8)
    record = attention.calibrate(shape, torch.float32, torch.device("cpu"), length=16, reps=2).record()
    eager = "mean of 2 eager calls (wall clock, synchronized at both ends)"
    # a CPU has no CUDA graphs: decode is timed eagerly too, and says so
    assert record["attention_trial_timing_prefill"] == record["attention_trial_timing_decode"] == eager
    assert attention._timing(True, 10).startswith("mean of 10 calls replayed from one CUDA graph")


def test_decode_is_timed_eagerly_when_no_correct_backend_can_be_captured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A device where capture fails for every backend still gets a decode backend, timed by eager
    calls, and the timing says why; each failed capture was tried first."""
    captures: list[int] = []

    def capture_fails(fn: object, reps: int) -> float:
        captures.append(reps)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(attention, "_has_graphs", lambda device: True)
    monkeypatch.setattr(attention, "_graph_us", capture_fails)
    shape = attention.Shape(heads=4, kv_heads=2, head_dim=8)
    choice = attention.calibrate(shape, torch.float32, torch.device("cpu"), length=16, reps=2)
    assert captures  # the graph was tried for every correct backend
    assert choice.decode is not None
    eager = "mean of 2 eager calls (wall clock, synchronized at both ends)"
    assert choice.timing["decode"] == f"{eager}; no correct backend captured in a CUDA graph"
    assert choice.trials[f"decode/{choice.decode.name.lower()}"].endswith(tuple("0123456789"))
