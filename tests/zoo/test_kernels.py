"""Kernel-path detection with the kernels absent (this machine) and with kernel packages importable."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ctxscope.agent.zoo import ZooError, kernel_availability
from ctxscope.agent.zoo.kernels import (
    SSM_KIND,
    TORCH_FALLBACK,
    native_plan,
    resolved_functions,
    transformers_plan,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
SSM_TYPES = sorted(t for t, kind in SSM_KIND.items() if kind)
FAKE_PACKAGES = ("causal_conv1d", "mamba_ssm")


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


@pytest.fixture
def importable_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Packages named like the kernel packages, exposing the functions transformers and mamba_ssm look up."""
    for model_type in SSM_TYPES:  # bind every modeling module first, as a real process would have
        importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    functions = "def causal_conv1d_fn(x, weight, bias=None, activation=None):\n    return x\n"
    functions += (
        "def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):\n    return x\n"
    )
    _write(tmp_path, "causal_conv1d/__init__.py", functions)
    _write(tmp_path, "mamba_ssm/__init__.py", "")
    _write(tmp_path, "mamba_ssm/ops/__init__.py", "")
    _write(tmp_path, "mamba_ssm/ops/triton/__init__.py", "")
    _write(
        tmp_path,
        "mamba_ssm/ops/selective_scan_interface.py",
        "def selective_scan_fn(*args):\n    return None\n",
    )
    _write(
        tmp_path,
        "mamba_ssm/ops/triton/ssd_combined.py",
        "def mamba_chunk_scan_combined(*args):\n    return None\n",
    )
    _write(tmp_path, "mamba_ssm/ops/triton/selective_state_update.py",
           "def selective_state_update(*args):\n    return None\n")  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in FAKE_PACKAGES]:
        del sys.modules[name]


@pytest.mark.skipif(
    importlib.util.find_spec("mamba_ssm") is not None or torch.cuda.is_available(),
    reason="checks the report on a machine without CUDA and SSM kernels",
)
def test_availability_on_this_machine() -> None:
    report = kernel_availability()
    assert set(report) == {
        "torch",
        "transformers",
        "mamba_ssm",
        "causal_conv1d",
        "flash_attn",
        "triton",
        "cuda",
    }
    assert report["torch"] == torch.__version__
    assert report["mamba_ssm"].startswith("unusable (ModuleNotFoundError")
    assert report["cuda"] == "not available"


def test_availability_sees_an_importable_package(importable_kernels) -> None:
    assert kernel_availability()["causal_conv1d"] == "importable (version unknown)"


@pytest.mark.parametrize("model_type", SSM_TYPES)
@pytest.mark.parametrize("device", [CPU, CUDA], ids=["cpu", "cuda"])
def test_without_kernels_every_ssm_op_falls_back(model_type, device) -> None:
    plan = transformers_plan(model_type, device)
    assert set(plan.implementation) == {"ssm_scan", "conv1d", "ssm_step"}
    assert set(plan.implementation.values()) == {TORCH_FALLBACK}
    assert "causal_conv1d.causal_conv1d_fn" in plan.missing
    assert any(m.startswith("mamba_ssm.") for m in plan.missing)
    assert "CUDA device" not in plan.missing


@pytest.mark.parametrize("model_type", ["qwen2", "llama", "phi3", "gpt_neo"])
def test_attention_only_models_have_no_ssm_plan(model_type) -> None:
    assert transformers_plan(model_type, CUDA).implementation == {}


def test_unknown_model_type_is_refused() -> None:
    with pytest.raises(ZooError):
        transformers_plan("rwkv", CPU)


def test_detection_follows_what_the_modeling_module_bound(importable_kernels) -> None:
    # the packages import now, but transformers bound its torch references when the module was imported
    assert resolved_functions("mamba2") == dict.fromkeys(resolved_functions("mamba2"), False)
    assert transformers_plan("mamba2", CUDA).implementation["ssm_scan"] == TORCH_FALLBACK


def _kernel(*args: object) -> None:
    return None


def _lazy_loading_layout(monkeypatch: pytest.MonkeyPatch, *, kernels: bool) -> None:
    """The modeling module as transformers 5.3-5.5 leaves it after building a model: kernel globals
    (None when the package was missing) and the `is_fast_path_available` switch."""
    module = types.ModuleType("transformers.models.mamba2.modeling_mamba2")
    for name in (
        "causal_conv1d_fn",
        "causal_conv1d_update",
        "selective_state_update",
        "mamba_chunk_scan_combined",
    ):
        setattr(module, name, _kernel if kernels else None)
    module.is_fast_path_available = kernels  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)


def test_lazy_loading_layout_with_kernels(monkeypatch) -> None:
    _lazy_loading_layout(monkeypatch, kernels=True)
    on_cuda = transformers_plan("mamba2", CUDA)
    assert on_cuda.missing == []
    assert on_cuda.implementation["ssm_scan"] == "mamba_ssm triton SSD chunk scan (transformers)"
    on_cpu = transformers_plan("mamba2", CPU)
    assert on_cpu.implementation["ssm_scan"] == TORCH_FALLBACK and on_cpu.missing == ["CUDA device"]


def test_lazy_loading_layout_without_kernels(monkeypatch) -> None:
    _lazy_loading_layout(monkeypatch, kernels=False)
    plan = transformers_plan("mamba2", CUDA)
    assert set(plan.implementation.values()) == {TORCH_FALLBACK}
    assert "mamba_ssm.mamba_chunk_scan_combined" in plan.missing


def test_native_plan_without_causal_conv1d() -> None:
    plan = native_plan("mamba2")
    assert plan.implementation["conv1d"] == "torch conv1d"
    assert plan.missing == ["causal_conv1d.causal_conv1d_fn"]
    assert "mamba_chunk_scan_combined" in plan.implementation["ssm_scan"]


def test_native_plan_with_causal_conv1d(importable_kernels) -> None:
    assert native_plan("mamba").implementation["ssm_scan"].startswith("mamba_ssm mamba_inner_fn")
    plan = native_plan("mamba2")
    assert plan.missing == [] and plan.implementation["conv1d"] == "causal_conv1d cuda"
    assert "mamba_split_conv1d_scan_combined" in plan.implementation["ssm_scan"]
