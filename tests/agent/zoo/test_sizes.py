"""Analytic sizes against built tiny models, their caches, and the publicly stated sizes."""

from __future__ import annotations

import pytest
import torch

from ctxscope.agent.zoo import (
    architecture,
    cache_bytes_per_token,
    get_spec,
    load_model,
    parameter_count,
    state_bytes,
    tiny_spec,
)
from ctxscope.agent.zoo.hfcache import hf_cache
from ctxscope.agent.zoo.sizes import ssd_in_proj_width, ssd_int32_limit_tokens

from .conftest import BUILDABLE, cache_tensor_bytes

# Publicly stated parameter counts (model cards, technical reports, keras-hub presets)
STATED_PARAMETERS = {
    "qwen2.5-0.5b": 0.49e9,
    "qwen2.5-1.5b": 1.54e9,
    "llama3.2-1b": 1.24e9,
    "phi3-mini-128k": 3_821_079_552,
    "tinyllama-1.1b": 1.1e9,
    "gpt-neo-125m": 125e6,
    "mamba-130m": 130e6,
    "mamba-370m": 370e6,
    "mamba-790m": 790e6,
    "mamba-1.4b": 1.4e9,
    "mamba-2.8b": 2.8e9,
    "mamba2-130m": 130e6,
    "mamba2-370m": 370e6,
    "mamba2-780m": 780e6,
    "mamba2-1.3b": 1.3e9,
    "mamba2-2.7b": 2.7e9,
    "falcon-h1-0.5b": 0.52e9,
    "falcon-h1-1.5b": 1_554_859_392,
    "zamba2-1.2b": 1.2e9,
    "zamba2-2.7b": 2.7e9,
    "nemotron-h-8b": 8.1e9,
    "granite-4.0-h-micro": 3.2e9,
    "bamba-9b": 9.78e9,
    "jamba-mini-1.5": 52e9,
}
# Weight sizes of the reference study (arXiv 2507.12442 data, bf16/fp16 weights, MiB)
STUDY_WEIGHTS_MIB = {
    "qwen2.5-0.5b": 942.29,
    "qwen2.5-1.5b": 2944.4,
    "llama3.2-1b": 2357.13,
    "phi3-mini-128k": 7288.13,
    "mamba-790m": 1512.92,
    "mamba2-780m": 1488.04,
    "falcon-h1-0.5b": 994.51,
    "zamba2-1.2b": 2317.55,
}


def test_every_buildable_entry_has_a_stated_size() -> None:
    assert set(STATED_PARAMETERS) == set(BUILDABLE)


@pytest.mark.parametrize("name", BUILDABLE)
def test_parameter_count_matches_built_tiny_model(name, tiny_model) -> None:
    loaded = tiny_model(name)
    built = sum(p.numel() for p in loaded.module.parameters())
    assert parameter_count(loaded.spec) == built == loaded.parameters


@pytest.mark.parametrize("name", BUILDABLE)
def test_parameter_count_matches_stated_size(name) -> None:
    assert parameter_count(get_spec(name)) == pytest.approx(STATED_PARAMETERS[name], rel=0.04)


@pytest.mark.parametrize("name", sorted(STUDY_WEIGHTS_MIB))
def test_weight_bytes_match_the_reference_study(name) -> None:
    mib = parameter_count(get_spec(name)) * 2 / 2**20
    assert mib == pytest.approx(STUDY_WEIGHTS_MIB[name], abs=0.1)


@pytest.mark.parametrize("name", BUILDABLE)
def test_cache_sizes_match_the_cache_after_a_forward(name, tiny_model) -> None:
    loaded = tiny_model(name)
    per_token, fixed = _measured_cache(loaded.module)
    assert per_token == cache_bytes_per_token(loaded.spec, torch.float32)
    assert fixed == state_bytes(loaded.spec, torch.float32)


@pytest.mark.parametrize(
    "name", ["mamba-130m", "mamba2-130m", "falcon-h1-0.5b", "nemotron-h-8b", "jamba-mini-1.5"]
)
def test_cache_sizes_in_bf16(name) -> None:
    loaded = load_model(tiny_spec(name), device="cpu", dtype=torch.bfloat16)
    per_token, fixed = _measured_cache(loaded.module)
    assert per_token == cache_bytes_per_token(loaded.spec, torch.bfloat16)
    assert (
        fixed
        == state_bytes(loaded.spec, torch.bfloat16)
        > state_bytes(loaded.spec, torch.bfloat16, "mamba_ssm")
    )


def _measured_cache(module: torch.nn.Module) -> tuple[int, int]:
    """(bytes per token, fixed bytes) of the cache a forward leaves, from forwards of 5 and 9 tokens."""
    held = {}
    for tokens in (5, 9):
        with torch.no_grad():
            out = module(torch.randint(0, 500, (1, tokens)), use_cache=True, logits_to_keep=1)
        held[tokens] = cache_tensor_bytes(hf_cache(out))
    per_token = (held[9] - held[5]) // 4
    return per_token, held[5] - 5 * per_token


def test_kinds_of_cache() -> None:
    bf16 = torch.bfloat16
    assert cache_bytes_per_token(get_spec("mamba2-780m"), bf16) == 0
    assert state_bytes(get_spec("qwen2.5-0.5b"), bf16) == 0
    # Qwen2.5-0.5B: 24 layers x 2 (K, V) x 2 KV heads x 64 dims x 2 bytes
    assert cache_bytes_per_token(get_spec("qwen2.5-0.5b"), bf16) == 24 * 2 * 2 * 64 * 2
    # Mamba2-780m: 48 layers x (conv (3072 + 2 x 128) x 4 x 2 bytes + SSM 48 heads x 64 x 128 x 2 or 4 bytes)
    conv, ssm = (3072 + 256) * 4, 48 * 64 * 128
    assert state_bytes(get_spec("mamba2-780m"), bf16, "mamba_ssm") == 48 * (conv + ssm) * 2
    assert state_bytes(get_spec("mamba2-780m"), bf16) == 48 * (conv * 2 + ssm * 4)


def test_native_state_bytes_scale_with_dtype() -> None:
    spec = tiny_spec("falcon-h1-0.5b")
    assert state_bytes(spec, torch.float32, "mamba_ssm") == 2 * state_bytes(spec, torch.bfloat16, "mamba_ssm")


SSD_ENTRIES = [name for name in BUILDABLE if architecture(get_spec(name).model_type).ssm_kind == "mamba2"]


@pytest.mark.parametrize("name", SSD_ENTRIES)
def test_ssd_in_proj_width_matches_the_built_mixer(name, tiny_model) -> None:
    loaded = tiny_model(name)
    widths = {
        module.out_features
        for path, module in loaded.module.named_modules()
        if path.endswith("in_proj") and isinstance(module, torch.nn.Linear)
    }
    assert widths == {ssd_in_proj_width(loaded.spec)}


def test_models_without_ssd_mixers_have_no_index_limit() -> None:
    for name in ("qwen2.5-0.5b", "mamba-790m", "jamba-mini-1.5"):
        assert ssd_int32_limit_tokens(get_spec(name)) is None


def test_index_limit_is_the_longest_prompt_under_two_to_the_31_elements() -> None:
    limit = ssd_int32_limit_tokens(get_spec("mamba2-780m"))
    width = ssd_in_proj_width(get_spec("mamba2-780m"))
    assert width == 2 * 3072 + 2 * 128 + 48
    assert limit * width < 2**31 <= (limit + 1) * width
