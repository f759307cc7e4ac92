"""The architecture registry: every zoo entry's model_type has one entry with every piece, each piece
works on that entry, and the registry holds nothing the zoo does not use."""

from __future__ import annotations

import copy

import pytest

from ctxscope.agent.zoo import ModelSpec, ZooError, arch_shape, architecture, get_spec, list_models
from ctxscope.agent.zoo.architectures import ARCHITECTURES
from ctxscope.agent.zoo.builders import build_pure_ssm, build_transformers
from ctxscope.agent.zoo.shapes import Attention, Mamba1, Mamba2, Mlp, Moe

BUILDABLE = list_models(include_unavailable=False)


@pytest.mark.parametrize("spec", BUILDABLE, ids=lambda s: s.name)
def test_every_zoo_model_has_every_piece(spec: ModelSpec) -> None:
    arch = architecture(spec.model_type)
    assert arch.model_type == spec.model_type
    config = arch.read_config(spec)
    assert config.model_type == spec.model_type
    assert arch.parameters(config) > 0
    shape = arch.shape(config)
    assert shape.model_type == spec.model_type and shape.blocks and shape.vocab == config.vocab_size
    shrunk = arch.shrink(copy.deepcopy(spec.config))
    assert shrunk != spec.config and set(spec.config) <= set(shrunk)
    assert arch.loader is (build_pure_ssm if arch.native else build_transformers)
    ssm_blocks = {type(b) for b in shape.blocks} & {Mamba1, Mamba2}
    expected_kind = {frozenset(): None, frozenset({Mamba1}): "mamba1", frozenset({Mamba2}): "mamba2"}
    assert arch.ssm_kind == expected_kind[frozenset(ssm_blocks)]
    assert (arch.ssm_kind is None) == (spec.family == "transformer")
    if arch.attention_interface:
        assert any(isinstance(b, Attention) for b in shape.blocks)


def test_the_registry_holds_the_zoo_and_nothing_else() -> None:
    assert set(ARCHITECTURES) == {spec.model_type for spec in BUILDABLE}
    assert all(model_type == arch.model_type for model_type, arch in ARCHITECTURES.items())


def test_an_unknown_model_type_names_the_known_ones() -> None:
    with pytest.raises(ZooError, match="hymba") as caught:
        architecture(get_spec("hymba-1.5b").model_type)
    assert "granitemoehybrid" in str(caught.value)


def _kinds(name: str) -> list[str]:
    return [type(block).__name__ for block in arch_shape(get_spec(name)).blocks]


def test_hybrid_shapes_follow_the_layouts_their_configs_declare() -> None:
    # Nemotron-H: hybrid_override_pattern, one mixer per layer (M Mamba-2, * attention, - MLP)
    pattern = get_spec("nemotron-h-8b").config["hybrid_override_pattern"]
    letters = {"Mamba2": "M", "Attention": "*", "Mlp": "-"}
    assert "".join(letters[k] for k in _kinds("nemotron-h-8b")) == pattern
    # Granite-4.0-H: layer_types, each mixer followed by the shared MLP (no local experts in micro)
    granite = get_spec("granite-4.0-h-micro").config["layer_types"]
    mixers = _kinds("granite-4.0-h-micro")[::2]
    assert mixers == ["Attention" if kind == "attention" else "Mamba2" for kind in granite]
    assert set(_kinds("granite-4.0-h-micro")[1::2]) == {"Mlp"}
    # Bamba: attention at attn_layer_indices
    bamba = _kinds("bamba-9b")[::2]
    assert [i for i, kind in enumerate(bamba) if kind == "Attention"] == [9, 18, 27]
    # Jamba: attention every 8th layer from 4, a routed MoE every 2nd layer from 1
    jamba = arch_shape(get_spec("jamba-mini-1.5")).blocks
    assert [i for i, b in enumerate(jamba[::2]) if isinstance(b, Attention)] == [4, 12, 20, 28]
    assert all(isinstance(b, Mamba1) for i, b in enumerate(jamba[::2]) if i % 8 != 4)
    ffn = jamba[1::2]
    assert [i for i, b in enumerate(ffn) if isinstance(b, Moe)] == list(range(1, 32, 2))
    assert all(isinstance(b, Mlp) for b in ffn[::2])
    assert {(b.experts, b.top_k) for b in ffn if isinstance(b, Moe)} == {(16, 2)}


def test_position_embeddings_without_rotary_are_not_counted_as_rotary() -> None:
    def rotary(name: str) -> set[bool]:
        return {b.rotary for b in arch_shape(get_spec(name)).blocks if isinstance(b, Attention)}

    assert rotary("gpt-neo-125m") == rotary("jamba-mini-1.5") == rotary("granite-4.0-h-micro") == {False}
    assert rotary("bamba-9b") == rotary("qwen2.5-0.5b") == {True}
