"""The config index is complete and every entry carries what the loaders need."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from setuptools import find_packages

from ctxscope.agent.zoo import ZooError, get_spec, hf_config, list_models

CONFIGS = resources.files("ctxscope.agent.zoo").joinpath("configs")
STUDY = [  # every model of the reference study, plus the newer hybrids the issue names
    "qwen2.5-0.5b", "qwen2.5-1.5b", "llama3.2-1b", "phi3-mini-128k", "tinyllama-1.1b", "gpt-neo-125m",
    "mamba-130m", "mamba-370m", "mamba-790m", "mamba-1.4b", "mamba-2.8b",
    "mamba2-130m", "mamba2-370m", "mamba2-780m", "mamba2-1.3b", "mamba2-2.7b",
    "falcon-h1-0.5b", "falcon-h1-1.5b", "zamba2-1.2b", "zamba2-2.7b", "hymba-1.5b",
    "nemotron-h-8b", "granite-4.0-h-micro", "bamba-9b", "jamba-mini-1.5",
]  # fmt: skip


def test_index_lists_every_study_model_and_no_orphan_config() -> None:
    names = [spec.name for spec in list_models()]
    assert names == STUDY
    shipped = {p.name.removesuffix(".json") for p in CONFIGS.iterdir() if p.name.endswith(".json")}
    buildable = {spec.name for spec in list_models(include_unavailable=False)}
    assert shipped - {"index"} == buildable


@pytest.mark.parametrize("spec", list_models(include_unavailable=False), ids=lambda s: s.name)
def test_entry_has_what_the_loaders_need(spec) -> None:
    assert spec.family in ("transformer", "ssm", "hybrid")
    assert spec.checkpoint.count("/") == 1
    assert spec.source
    if "model_type" in spec.config:
        assert spec.config["model_type"] == spec.model_type
    config = hf_config(spec)
    assert config.model_type == spec.model_type
    assert config.num_hidden_layers > 0 and config.hidden_size > 0 and config.vocab_size > 0


def test_hymba_is_listed_unavailable_with_its_reason() -> None:
    spec = get_spec("hymba-1.5b")
    assert spec.unavailable and "remote code" in spec.unavailable.replace("_", " ")
    assert spec.config == {}
    assert "hymba-1.5b" not in [s.name for s in list_models(include_unavailable=False)]


def test_unknown_name_lists_the_zoo() -> None:
    with pytest.raises(ZooError) as caught:
        get_spec("qwen-7b")
    assert isinstance(caught.value, KeyError)
    assert "mamba2-780m" in str(caught.value)


def test_specs_do_not_share_mutable_configs() -> None:
    first = get_spec("qwen2.5-0.5b")
    first.config["num_hidden_layers"] = 1
    assert get_spec("qwen2.5-0.5b").config["num_hidden_layers"] == 24


def test_hybrid_layouts() -> None:
    zamba = hf_config(get_spec("zamba2-1.2b"))
    assert [i for i, t in enumerate(zamba.layers_block_type) if t == "hybrid"] == [5, 11, 17, 23, 29, 35]
    nemotron = hf_config(get_spec("nemotron-h-8b"))
    assert nemotron.layers_block_type.count("full_attention") == 4
    assert nemotron.layers_block_type.count("linear_attention") == 24
    bamba = hf_config(get_spec("bamba-9b"))
    assert [i for i, t in enumerate(bamba.layers_block_type) if t == "full_attention"] == [9, 18, 27]


def test_configs_ship_in_the_wheel() -> None:
    # setup.py maps each folder's find_packages() into ctxscope.*; package data rides on packages only
    agent_folder = Path(__file__).resolve().parents[3] / "agent"
    assert "zoo.configs" in find_packages(str(agent_folder))
