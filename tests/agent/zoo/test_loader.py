"""Every entry builds through load_model on CPU and runs a forward; the kernel path is stated."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ctxscope.agent.zoo import KernelPathError, ZooError, get_spec, load_model, tiny_spec
from ctxscope.agent.zoo.kernels import TORCH_FALLBACK

from .conftest import BUILDABLE

SSM_ENTRIES = [name for name in BUILDABLE if get_spec(name).family != "transformer"]
TRANSFORMER_ENTRIES = [name for name in BUILDABLE if get_spec(name).family == "transformer"]


@pytest.mark.parametrize("name", BUILDABLE)
def test_tiny_variant_runs_a_forward(name, tiny_model) -> None:
    loaded = tiny_model(name)
    module = loaded.module
    assert not module.training
    assert {p.dtype for p in module.parameters()} == {torch.float32}
    assert {p.device.type for p in module.parameters()} == {"cpu"}
    vocab = module.get_output_embeddings().weight.shape[0]
    with torch.no_grad():
        logits = module(torch.randint(0, 500, (1, 7)), **{loaded.logits_kwarg: 1}).logits
    assert logits.shape == (1, 1, vocab)
    assert torch.isfinite(logits).all()
    assert loaded.weight_bytes == 4 * loaded.parameters


@pytest.mark.parametrize("name", SSM_ENTRIES)
def test_ssm_on_cpu_states_the_torch_fallback(name, tiny_model) -> None:
    loaded = tiny_model(name)
    assert loaded.runtime == "transformers"
    assert loaded.implementation["ssm_scan"] == TORCH_FALLBACK
    assert loaded.implementation["conv1d"] == TORCH_FALLBACK
    assert loaded.implementation["loader"].startswith("transformers")
    if loaded.spec.model_type in ("mamba", "mamba2"):
        assert any("native mamba_ssm not used" in note for note in loaded.notes)


@pytest.mark.skipif(
    importlib.util.find_spec("mamba_ssm") is not None, reason="mamba_ssm is installed: no fallback to refuse"
)
@pytest.mark.parametrize("name", SSM_ENTRIES)
def test_require_fast_kernels_raises_on_this_machine(name) -> None:
    with pytest.raises(KernelPathError, match="mamba_ssm"):
        load_model(tiny_spec(name), device="cpu", dtype=torch.float32, require_fast_kernels=True)


@pytest.mark.parametrize("name", TRANSFORMER_ENTRIES)
def test_transformers_need_no_ssm_kernels(name, tiny_model) -> None:
    loaded = load_model(tiny_spec(name), device="cpu", dtype=torch.float32, require_fast_kernels=True)
    assert "ssm_scan" not in loaded.implementation
    assert loaded.implementation["attention"] == tiny_model(name).implementation["attention"]


def test_attention_implementation_is_the_one_set() -> None:
    loaded = load_model(
        tiny_spec("qwen2.5-0.5b"), device="cpu", dtype=torch.float32, attn_implementation="eager"
    )
    assert loaded.implementation["attention"] == "eager"
    default = load_model(tiny_spec("qwen2.5-0.5b"), device="cpu", dtype=torch.float32)
    assert default.implementation["attention"] == "sdpa"


def test_dtype_is_applied() -> None:
    loaded = load_model(tiny_spec("falcon-h1-0.5b"), device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.module.parameters()} == {torch.bfloat16}
    assert loaded.weight_bytes == 2 * loaded.parameters


def test_local_weights_round_trip(tmp_path) -> None:
    source = load_model(tiny_spec("mamba2-130m"), device="cpu", dtype=torch.float32)
    source.module.save_pretrained(tmp_path)
    loaded = load_model(tiny_spec("mamba2-130m"), device="cpu", dtype=torch.float32, weights=str(tmp_path))
    assert "local weights" in loaded.implementation["loader"]
    for (name, a), (_, b) in zip(
        source.module.state_dict().items(), loaded.module.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_unavailable_entry_is_refused() -> None:
    with pytest.raises(ZooError, match="trust_remote_code"):
        load_model("hymba-1.5b", device="cpu", dtype=torch.float32)
