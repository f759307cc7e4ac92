"""The architecture registry: one entry per HF `model_type`, holding everything the agent knows about
that architecture, and the one place any caller looks it up.

An entry names its config reader (hfconfig.py), parameter formula (parameters.py), shape reader
(shapes.py; the KV cache, SSM state and roofline figures follow from the shape), test shrink
(shrink.py), builder (builders.py), the SSM kind whose kernel rules the load probe checks (kernels.py)
and whether its attention takes a registered attention path (engine/attention.py). The functions live
in those modules; which model_type takes which lives only here.
A model_type missing here is not supported anywhere (no guessing from names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ctxscope.agent.zoo import parameters, shapes, shrink
from ctxscope.agent.zoo.builders import Builder, build_pure_ssm, build_transformers
from ctxscope.agent.zoo.hfconfig import derived_config, published_config
from ctxscope.agent.zoo.kernels import SsmKind
from ctxscope.agent.zoo.spec import ModelSpec, ZooError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

ConfigFormat = Literal["mamba_ssm", "transformers"]


@dataclass(frozen=True)
class Architecture:
    """One model_type. `config_format` is the config its zoo entries ship: mamba_ssm's own (the
    transformers config is derived from it, and mamba_ssm can build the model natively) or transformers'.
    `parameters` and `shape` read the transformers config; `shrink` the shipped one."""

    model_type: str
    config_format: ConfigFormat
    parameters: Callable[[Any], int]
    shape: Callable[[Any], shapes.ArchShape]
    shrink: Callable[[dict[str, Any]], dict[str, Any]]
    loader: Builder
    ssm_kind: SsmKind | None  # None: no SSM layers, nothing for the kernel probe to check
    # its attention layers call transformers' AttentionInterface (with `num_key_value_groups`), so an
    # attention path registered there reaches them (the engine's sdpa-gqa, engine/attention.py)
    attention_interface: bool

    @property
    def native(self) -> bool:
        """Whether mamba_ssm can build it (MambaLMHeadModel) besides transformers."""
        return self.config_format == "mamba_ssm"

    def read_config(self, spec: ModelSpec) -> PretrainedConfig:
        """The transformers config of an entry of this architecture."""
        return derived_config(spec) if self.native else published_config(spec)


ARCHITECTURES: dict[str, Architecture] = {
    arch.model_type: arch
    for arch in (
        Architecture(
            model_type="qwen2",
            config_format="transformers",
            parameters=parameters.qwen2,
            shape=shapes.transformer,
            shrink=shrink.qwen2,
            loader=build_transformers,
            ssm_kind=None,
            attention_interface=True,
        ),
        Architecture(
            model_type="llama",
            config_format="transformers",
            parameters=parameters.llama,
            shape=shapes.transformer,
            shrink=shrink.llama,
            loader=build_transformers,
            ssm_kind=None,
            attention_interface=True,
        ),
        Architecture(
            model_type="phi3",
            config_format="transformers",
            parameters=parameters.phi3,
            shape=shapes.transformer,
            shrink=shrink.phi3,
            loader=build_transformers,
            ssm_kind=None,
            attention_interface=True,
        ),
        Architecture(
            model_type="gpt_neo",
            config_format="transformers",
            parameters=parameters.gpt_neo,
            shape=shapes.gpt_neo,
            shrink=shrink.gpt_neo,
            loader=build_transformers,
            ssm_kind=None,
            attention_interface=False,
        ),
        Architecture(
            model_type="mamba",
            config_format="mamba_ssm",
            parameters=parameters.mamba,
            shape=shapes.mamba,
            shrink=shrink.mamba,
            loader=build_pure_ssm,
            ssm_kind="mamba1",
            attention_interface=False,
        ),
        Architecture(
            model_type="mamba2",
            config_format="mamba_ssm",
            parameters=parameters.mamba2,
            shape=shapes.mamba2,
            shrink=shrink.mamba2,
            loader=build_pure_ssm,
            ssm_kind="mamba2",
            attention_interface=False,
        ),
        Architecture(
            model_type="falcon_h1",
            config_format="transformers",
            parameters=parameters.falcon_h1,
            shape=shapes.falcon_h1,
            shrink=shrink.falcon_h1,
            loader=build_transformers,
            ssm_kind="mamba2",
            attention_interface=True,
        ),
        Architecture(
            model_type="zamba2",
            config_format="transformers",
            parameters=parameters.zamba2,
            shape=shapes.zamba2,
            shrink=shrink.zamba2,
            loader=build_transformers,
            ssm_kind="mamba2",
            attention_interface=True,
        ),
        Architecture(
            model_type="bamba",
            config_format="transformers",
            parameters=parameters.bamba,
            shape=shapes.bamba,
            shrink=shrink.bamba,
            loader=build_transformers,
            ssm_kind="mamba2",
            attention_interface=True,
        ),
        Architecture(
            model_type="nemotron_h",
            config_format="transformers",
            parameters=parameters.nemotron_h,
            shape=shapes.nemotron_h,
            shrink=shrink.nemotron_h,
            loader=build_transformers,
            ssm_kind="mamba2",
            attention_interface=True,
        ),
        Architecture(
            model_type="granitemoehybrid",
            config_format="transformers",
            parameters=parameters.granitemoehybrid,
            shape=shapes.granitemoehybrid,
            shrink=shrink.granitemoehybrid,
            loader=build_transformers,
            ssm_kind="mamba2",
            attention_interface=True,
        ),
        Architecture(
            model_type="jamba",
            config_format="transformers",
            parameters=parameters.jamba,
            shape=shapes.jamba,
            shrink=shrink.jamba,
            loader=build_transformers,
            ssm_kind="mamba1",
            attention_interface=True,
        ),
    )
}


def architecture(model_type: str) -> Architecture:
    """The registry entry of `model_type`; ZooError naming the known ones otherwise."""
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise ZooError(
            f"no architecture entry for model_type {model_type!r}; known: {', '.join(ARCHITECTURES)}"
        )
    return arch


def hf_config(spec: ModelSpec) -> PretrainedConfig:
    """The transformers config of an entry, read as its architecture reads it."""
    if spec.unavailable:
        raise ZooError(f"{spec.name} is unavailable: {spec.unavailable}")
    return architecture(spec.model_type).read_config(spec)


def arch_shape(spec: ModelSpec) -> shapes.ArchShape:
    """The blocks of an entry, in forward order, read from its transformers config."""
    return architecture(spec.model_type).shape(hf_config(spec))
