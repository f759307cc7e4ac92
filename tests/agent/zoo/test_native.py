"""The mamba_ssm configs of the pure SSM entries and the transformers configs derived from them agree."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ctxscope.agent.zoo import get_spec, hf_config, native_config, tiny_spec
from ctxscope.agent.zoo.builders import native_unavailable_reason
from ctxscope.agent.zoo.hfconfig import padded_vocab, ssm_layer_config

# Fields of mamba_ssm 2.3.2 models/config_mamba.py MambaConfig (the dataclass MambaLMHeadModel takes)
MAMBA_CONFIG_FIELDS = {
    "d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg", "rms_norm",
    "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings",
}  # fmt: skip
PURE_SSM = [s for s in ("mamba-130m", "mamba-370m", "mamba-790m", "mamba-1.4b", "mamba-2.8b", "mamba2-130m",
                        "mamba2-370m", "mamba2-780m", "mamba2-1.3b", "mamba2-2.7b")]  # fmt: skip


@pytest.mark.parametrize("name", PURE_SSM)
def test_native_config_is_a_complete_mamba_config(name) -> None:
    native = native_config(get_spec(name))
    assert set(native) == MAMBA_CONFIG_FIELDS
    assert native["attn_layer_idx"] == [] and native["d_intermediate"] == 0


@pytest.mark.parametrize("name", PURE_SSM)
def test_derived_transformers_config_has_the_native_shapes(name) -> None:
    spec = get_spec(name)
    native, layer, hf = native_config(spec), ssm_layer_config(spec), hf_config(spec)
    assert hf.hidden_size == native["d_model"]
    assert hf.num_hidden_layers == native["n_layer"]
    assert hf.vocab_size == padded_vocab(spec)
    assert hf.vocab_size % native["pad_vocab_size_multiple"] == 0
    assert hf.state_size == layer["d_state"]
    assert hf.conv_kernel == layer["d_conv"]
    assert hf.tie_word_embeddings == native["tie_embeddings"]
    if layer["layer"] == "Mamba2":
        assert hf.num_heads * hf.head_dim == layer["expand"] * native["d_model"]
        assert (hf.head_dim, hf.n_groups, hf.chunk_size) == (
            layer["headdim"],
            layer["ngroups"],
            layer["chunk_size"],
        )
    else:
        assert hf.intermediate_size == layer["expand"] * native["d_model"]
        assert hf.time_step_rank == -(-native["d_model"] // 16)


def test_published_shapes() -> None:
    assert padded_vocab(get_spec("mamba-130m")) == 50280  # as in state-spaces/mamba-130m-hf
    assert padded_vocab(get_spec("mamba2-780m")) == 50288
    mamba2 = hf_config(get_spec("mamba2-780m"))
    assert (mamba2.num_heads, mamba2.head_dim, mamba2.state_size, mamba2.n_groups) == (48, 64, 128, 1)
    mamba = hf_config(get_spec("mamba-790m"))
    assert (mamba.intermediate_size, mamba.state_size, mamba.time_step_rank) == (3072, 16, 96)


def test_tiny_variant_pads_its_vocabulary_like_mamba_ssm() -> None:
    spec = tiny_spec("mamba-130m")
    assert native_config(spec)["vocab_size"] % 8 != 0
    assert hf_config(spec).vocab_size == padded_vocab(spec) == 504


def test_native_runtime_is_refused_without_cuda() -> None:
    assert "CUDA" in native_unavailable_reason(torch.device("cpu"))


def test_tiny_spec_keeps_identity() -> None:
    tiny = tiny_spec("zamba2-2.7b")
    original = get_spec("zamba2-2.7b")
    assert tiny.tiny and tiny.name == "zamba2-2.7b-tiny"
    assert dataclasses.replace(tiny, name=original.name, config=original.config, tiny=False) == original
