"""Analytic FLOPs checked against real (tiny) transformers modules; peaks table; achieved fractions."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

from ctxscope.agent.profiling.roofline import Work, find_peaks, pass_work, peaks_by_key, roofline
from ctxscope.agent.zoo import arch_shape, hf_config, list_models, tiny_spec
from ctxscope.agent.zoo.shapes import ArchShape, Moe

MODELS = [spec.name for spec in list_models(include_unavailable=False)]
TOKENS = 48


def _measured_flops(name: str) -> dict[str, float]:
    """FLOPs of the nn.Linear / nn.Conv1d / fused expert weights of the real tiny model, each counted once
    per call.

    A module's calls are counted by a forward hook; one that the model uses functionally (HF SSM
    mixers pass `conv1d.weight` or `dt_proj.weight` to kernels) takes its parent's call count.
    """
    from transformers import AutoModelForCausalLM

    config = hf_config(tiny_spec(name))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    calls: dict[str, int] = {}
    handles = []
    for qualified, module in model.named_modules():

        def count(*_: object, qualified: str = qualified) -> None:
            calls[qualified] = calls.get(qualified, 0) + 1

        handles.append(module.register_forward_pre_hook(count))
    ids = torch.randint(0, config.vocab_size, (1, TOKENS))
    with torch.inference_mode():
        model(input_ids=ids, logits_to_keep=1, use_cache=False)
    for handle in handles:
        handle.remove()
    flops = {"gemm": 0.0, "lm_head": 0.0, "conv1d": 0.0}
    for qualified, module in model.named_modules():
        uses = calls.get(qualified) or calls.get(qualified.rsplit(".", 1)[0], 0)
        if qualified == "lm_head":
            flops["lm_head"] += 2.0 * uses * module.in_features * module.out_features
        elif isinstance(module, torch.nn.Linear):
            flops["gemm"] += 2.0 * uses * TOKENS * module.in_features * module.out_features
        elif isinstance(getattr(module, "gate_up_proj", None), torch.nn.Parameter):
            # fused experts (one 3D weight per projection): each token through top-k of them
            per_expert = module.gate_up_proj[0].numel() + module.down_proj[0].numel()
            flops["gemm"] += 2.0 * uses * TOKENS * config.num_experts_per_tok * per_expert
        elif isinstance(module, torch.nn.Conv1d):
            taps = module.kernel_size[0] * module.in_channels // module.groups
            flops["conv1d"] += 2.0 * uses * TOKENS * module.out_channels * taps
    return flops


@pytest.mark.parametrize("name", MODELS)
def test_projection_and_conv_flops_match_a_real_forward(name: str) -> None:
    measured = _measured_flops(name)
    work = pass_work(arch_shape(tiny_spec(name)), "prefill", TOKENS, "fp32")
    assert work.flops["gemm"] == pytest.approx(measured["gemm"])
    assert work.flops["lm_head"] == pytest.approx(measured["lm_head"])
    assert work.flops.get("conv1d", 0.0) == pytest.approx(measured["conv1d"])


def test_attention_is_quadratic_in_prefill_and_linear_in_decode() -> None:
    shape = arch_shape(tiny_spec("qwen2.5-0.5b"))
    attention = [pass_work(shape, "prefill", t, "bf16").flops["attention"] for t in (1024, 2048)]
    assert attention[1] == pytest.approx(4 * attention[0])
    layers, heads, head_dim = 2, 4, 16
    assert attention[0] == pytest.approx(layers * 2 * 1024**2 * heads * head_dim)
    decode = [pass_work(shape, "decode", t, "bf16").flops["attention"] for t in (1024, 2048)]
    assert decode[1] == pytest.approx(2 * decode[0])
    assert decode[0] == pytest.approx(layers * 4 * 1024 * heads * head_dim)


def test_a_decode_step_reads_only_the_experts_its_token_can_pick() -> None:
    moe = Moe(hidden=64, intermediate=128, experts=8, top_k=2, gated=True)
    shape = ArchShape("moe", 64, 512, (moe,), norms=1)
    expert_bytes = 3 * 64 * 128 * 4
    decode = pass_work(shape, "decode", 1024, "fp32").bytes["gemm"]
    prefill = pass_work(shape, "prefill", 1024, "fp32").bytes["gemm"]
    assert 2 * expert_bytes < decode < 3 * expert_bytes
    assert prefill > 8 * expert_bytes


def test_all_position_logits_multiply_the_lm_head_by_the_length() -> None:
    shape = arch_shape(tiny_spec("qwen2.5-0.5b"))
    last = pass_work(shape, "prefill", 4096, "bf16", logits="last").flops["lm_head"]
    every = pass_work(shape, "prefill", 4096, "bf16", logits="all").flops["lm_head"]
    assert every == pytest.approx(4096 * last)


@pytest.mark.parametrize(
    ("description", "key"),
    [
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA Jetson AGX Orin Developer Kit", "jetson-agx-orin-64gb"),
        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "jetson-orin-nx-16gb"),
        ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano-8gb"),
        ("NVIDIA Jetson Orin Nano Super Developer Kit", "jetson-orin-nano-8gb-super"),
    ],
)
def test_device_descriptions_find_their_peaks(description: str, key: str) -> None:
    peaks = find_peaks(description)
    assert peaks is not None and peaks.key == key
    assert peaks.bf16_tflops > peaks.fp32_tflops > 0 and peaks.memory_gb_s > 0 and peaks.source


def test_an_unknown_device_has_no_peaks() -> None:
    assert find_peaks("cpu") is None


def test_every_peak_entry_names_its_source() -> None:
    table = json.loads(resources.files("ctxscope.agent.profiling").joinpath("peaks.json").read_text())
    for key, entry in table["devices"].items():
        assert len(entry["source"]) > 20, key


def test_roofline_fractions() -> None:
    work = Work()
    work.add("gemm", 989.4e12 * 0.5, 4.8e12 * 0.25)  # half the H200's FLOP peak, a quarter of its bandwidth
    figures = roofline(work, 1.0, peaks_by_key("h200-sxm"), "bf16", "test")
    assert figures["fraction_of_peak_flops"] == pytest.approx(0.5)
    assert figures["fraction_of_peak_bandwidth"] == pytest.approx(0.25)
    assert figures["bound"] == "compute"
    assert figures["fraction_of_roofline"] == pytest.approx(0.5)
    assert "fraction_of_peak_flops" not in roofline(work, 1.0, None, "bf16", "test")
