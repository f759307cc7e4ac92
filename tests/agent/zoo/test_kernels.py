"""Kernel-path records come from evidence of the call: a kernel is named only when the probe saw it run."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from ctxscope.agent.zoo import KernelPathError, kernel_availability, load_model, tiny_spec
from ctxscope.agent.zoo.architectures import ARCHITECTURES
from ctxscope.agent.zoo.calls import CallEvidence
from ctxscope.agent.zoo.kernels import TORCH_FALLBACK, compiled_step_label, observed_plan, plan_from_evidence

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
FAKE_PACKAGES = ("causal_conv1d", "mamba_ssm")
# Stand-ins for the kernel packages, with their entry points in the files the real packages use.
FAKE_FILES = {
    "causal_conv1d/__init__.py": """
        def causal_conv1d_fn(*args, **kwargs):
            return None
        def causal_conv1d_update(*args, **kwargs):
            return None
    """,
    "mamba_ssm/__init__.py": "",
    "mamba_ssm/ops/__init__.py": "",
    "mamba_ssm/ops/triton/__init__.py": "",
    "mamba_ssm/ops/selective_scan_interface.py": """
        def selective_scan_fn(*args, **kwargs):
            return None
        def mamba_inner_fn(*args, **kwargs):
            return None
    """,
    "mamba_ssm/ops/triton/ssd_combined.py": """
        def mamba_chunk_scan_combined(*args, **kwargs):
            return None
        def mamba_split_conv1d_scan_combined(*args, **kwargs):
            return None
    """,
    "mamba_ssm/ops/triton/selective_state_update.py": """
        def selective_state_update(*args, **kwargs):
            return None
    """,
}


def write_fake_kernels(root: Path) -> None:
    for relative, source in FAKE_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


@pytest.fixture
def fake_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """The stand-in packages importable in this process; yields their modules by short name."""
    write_fake_kernels(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield {
        "conv": importlib.import_module("causal_conv1d"),
        "scan1": importlib.import_module("mamba_ssm.ops.selective_scan_interface"),
        "ssd": importlib.import_module("mamba_ssm.ops.triton.ssd_combined"),
        "step": importlib.import_module("mamba_ssm.ops.triton.selective_state_update"),
    }
    for name in [m for m in sys.modules if m.split(".")[0] in FAKE_PACKAGES]:
        del sys.modules[name]


def _evidence(*calls: object) -> CallEvidence:
    with CallEvidence(FAKE_PACKAGES) as seen:
        for call in calls:
            call()  # type: ignore[operator]
    return seen


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


def test_availability_sees_an_importable_package(fake_kernels) -> None:
    assert kernel_availability()["causal_conv1d"] == "importable (version unknown)"


def test_call_evidence_names_package_file_and_function(fake_kernels) -> None:
    seen = _evidence(fake_kernels["ssd"].mamba_chunk_scan_combined, fake_kernels["conv"].causal_conv1d_fn)
    assert seen.entered("mamba_ssm", "ops/triton/ssd_combined.py")
    assert seen.functions("mamba_ssm", "ops/triton/ssd_combined.py") == {"mamba_chunk_scan_combined"}
    assert seen.entered("causal_conv1d") and not seen.entered("mamba_ssm", "ops/selective_scan_interface.py")
    assert not _evidence(lambda: torch.ones(2).sum()).calls  # torch alone is no kernel evidence


def test_every_op_called_is_named_as_its_kernel(fake_kernels) -> None:
    prefill = _evidence(fake_kernels["ssd"].mamba_chunk_scan_combined, fake_kernels["conv"].causal_conv1d_fn)
    step = _evidence(fake_kernels["step"].selective_state_update, fake_kernels["conv"].causal_conv1d_update)
    plan = plan_from_evidence("mamba2", {"prefill": prefill, "step": step}, "transformers", CUDA)
    assert plan.missing == []
    assert plan.implementation == {
        "ssm_scan": "mamba_ssm mamba_chunk_scan_combined (triton SSD) (transformers)",
        "conv1d": "causal_conv1d cuda (transformers)",
        "ssm_step": "mamba_ssm triton selective_state_update + causal_conv1d_update (transformers)",
    }


def test_a_kernel_not_called_is_never_named(fake_kernels) -> None:
    # both packages import, the scan kernel ran, the conv kernel and the step kernels did not
    prefill = _evidence(fake_kernels["scan1"].mamba_inner_fn)
    step = _evidence(fake_kernels["step"].selective_state_update)
    plan = plan_from_evidence("mamba1", {"prefill": prefill, "step": step}, "mamba_ssm", CUDA)
    assert plan.implementation["ssm_scan"] == "mamba_ssm mamba_inner_fn (fused conv + selective_scan_cuda)"
    assert plan.implementation["conv1d"] == TORCH_FALLBACK
    assert plan.implementation["ssm_step"] == (
        "mamba_ssm triton selective_state_update + torch causal_conv1d_update fallback"
    )
    assert plan.missing == ["causal_conv1d.causal_conv1d_fn", "causal_conv1d.causal_conv1d_update"]


def test_the_fused_scan_is_named_before_its_parts(fake_kernels) -> None:
    ssd = fake_kernels["ssd"]
    prefill = _evidence(ssd.mamba_split_conv1d_scan_combined, ssd.mamba_chunk_scan_combined)
    plan = plan_from_evidence("mamba2", {"prefill": prefill, "step": _evidence()}, "mamba_ssm", CUDA)
    assert plan.implementation["ssm_scan"] == "mamba_ssm mamba_split_conv1d_scan_combined (triton SSD)"


@pytest.mark.parametrize("model_type", sorted(t for t, arch in ARCHITECTURES.items() if arch.ssm_kind))
def test_on_cpu_without_kernels_every_ssm_op_is_the_fallback(model_type, tiny_model) -> None:
    names = {"mamba": "mamba-130m", "mamba2": "mamba2-130m", "falcon_h1": "falcon-h1-0.5b",
             "zamba2": "zamba2-1.2b", "bamba": "bamba-9b", "nemotron_h": "nemotron-h-8b",
             "granitemoehybrid": "granite-4.0-h-micro", "jamba": "jamba-mini-1.5"}  # fmt: skip
    loaded = tiny_model(names[model_type])
    plan = observed_plan(loaded.module, ARCHITECTURES[model_type].ssm_kind, "transformers", CPU)
    assert set(plan.implementation) == {"ssm_scan", "conv1d", "ssm_step"}
    assert set(plan.implementation.values()) == {TORCH_FALLBACK}
    assert "causal_conv1d.causal_conv1d_fn" in plan.missing and "CUDA device" in plan.missing


@pytest.mark.parametrize("model_type", ["qwen2", "llama", "phi3", "gpt_neo"])
def test_attention_only_models_have_no_ssm_plan(model_type) -> None:
    kind = ARCHITECTURES[model_type].ssm_kind
    assert kind is None
    assert observed_plan(torch.nn.Identity(), kind, "transformers", CUDA).implementation == {}


def test_a_kernel_called_inside_the_forward_is_recorded(fake_kernels, monkeypatch) -> None:
    """The probe watches the real forward: a mixer that enters the kernel packages is recorded as such."""
    from transformers.models.mamba2 import modeling_mamba2

    original = modeling_mamba2.Mamba2Mixer.forward

    def forward_through_kernels(self, hidden_states, *args, **kwargs):  # type: ignore[no-untyped-def]
        if hidden_states.shape[1] > 1:
            fake_kernels["ssd"].mamba_chunk_scan_combined()
            fake_kernels["conv"].causal_conv1d_fn()
        else:
            fake_kernels["step"].selective_state_update()
            fake_kernels["conv"].causal_conv1d_update()
        return original(self, hidden_states, *args, **kwargs)

    monkeypatch.setattr(modeling_mamba2.Mamba2Mixer, "forward", forward_through_kernels)
    loaded = load_model(
        tiny_spec("mamba2-130m"), device="cpu", dtype=torch.float32, require_fast_kernels=True
    )
    assert (
        loaded.implementation["ssm_scan"] == "mamba_ssm mamba_chunk_scan_combined (triton SSD) (transformers)"
    )
    assert loaded.implementation["ssm_step"].startswith("mamba_ssm triton selective_state_update")


# A working causal_conv1d stand-in (torch inside) that logs each call to the file named in FAKE_KERNEL_LOG:
# the log is evidence that does not come from the detector under test.
LOGGING_CONV = """
import os
import torch
import torch.nn.functional as F


def _log(name):
    with open(os.environ["FAKE_KERNEL_LOG"], "a") as log:
        log.write(name + "\\n")


def _act(out, activation):
    return F.silu(out) if activation in ("silu", "swish") else out


def causal_conv1d_fn(x, weight, bias=None, activation=None, **kwargs):
    _log("causal_conv1d_fn")
    pad = weight.shape[-1] - 1
    out = F.conv1d(x.to(weight.dtype), weight.unsqueeze(1), bias, padding=pad, groups=x.shape[1])
    return _act(out[..., : x.shape[-1]], activation).to(x.dtype)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, **kwargs):
    _log("causal_conv1d_update")
    squeeze = x.dim() == 2
    x = x.unsqueeze(-1) if squeeze else x
    full = torch.cat([conv_state, x.to(conv_state.dtype)], dim=-1)
    conv_state.copy_(full[..., -conv_state.shape[-1] :])
    out = _act(F.conv1d(full.to(weight.dtype), weight.unsqueeze(1), bias, groups=x.shape[1]), activation)
    out = out[..., -x.shape[-1] :].to(x.dtype)
    return out.squeeze(-1) if squeeze else out
"""
_FRESH_PROCESS = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from ctxscope.agent.zoo import load_model, tiny_spec
loaded = load_model(tiny_spec(sys.argv[2]), device="cpu", dtype=torch.float32)
print(json.dumps(loaded.implementation))
"""


@pytest.mark.parametrize("name", ["mamba-130m", "mamba2-130m", "zamba2-1.2b", "falcon-h1-0.5b"])
def test_the_record_agrees_with_a_log_kept_by_the_kernel_itself(name, tmp_path) -> None:
    """causal_conv1d importable before transformers binds anything, as on a GPU host. Whether this
    transformers version calls it on CPU tensors (5.20 does, 5.25 does not) is not assumed: the record must
    name the conv kernels exactly when the package's own log says they ran, and the scan never (no
    mamba_ssm). Breaking the detection (naming a kernel because its package imports) fails this test."""
    (tmp_path / "causal_conv1d").mkdir()
    (tmp_path / "causal_conv1d" / "__init__.py").write_text(LOGGING_CONV)
    log = tmp_path / "calls.log"
    log.touch()
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "FAKE_KERNEL_LOG": str(log)}
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(tmp_path), name],
        capture_output=True, text=True, timeout=240, env=env, check=True,
    )  # fmt: skip
    implementation = json.loads(out.stdout.strip().splitlines()[-1])
    called = set(log.read_text().split())
    assert implementation["ssm_scan"] == TORCH_FALLBACK
    assert ("causal_conv1d" in implementation["conv1d"]) == ("causal_conv1d_fn" in called), (
        called,
        implementation,
    )
    assert ("causal_conv1d_update (" in implementation["ssm_step"]) == ("causal_conv1d_update" in called), (
        called,
        implementation,
    )


def test_require_fast_kernels_names_what_was_not_called() -> None:
    with pytest.raises(KernelPathError, match=r"CUDA device, causal_conv1d\.causal_conv1d_fn"):
        load_model(tiny_spec("mamba2-130m"), device="cpu", dtype=torch.float32, require_fast_kernels=True)


@pytest.mark.parametrize(
    ("packages", "expected"),
    [
        ({"mamba_ssm", "causal_conv1d"}, "mamba_ssm triton selective_state_update + causal_conv1d_update"),
        (
            {"mamba_ssm"},
            "mamba_ssm triton selective_state_update + torch causal_conv1d_update (compiled by inductor)",
        ),
        (
            set(),
            "torch selective_state_update (compiled by inductor) + torch causal_conv1d_update (compiled by"
            " inductor)",
        ),
        (
            {"causal_conv1d_cuda", "mamba_ssm"},
            "mamba_ssm triton selective_state_update + causal_conv1d_update",
        ),
    ],
)
def test_a_compiled_step_names_only_the_kernels_its_graph_holds(packages: set[str], expected: str) -> None:
    eager = "mamba_ssm triton selective_state_update + causal_conv1d_update"
    assert compiled_step_label(eager + " (transformers)", packages) == expected + " (transformers)"
    assert compiled_step_label(eager, packages) == expected


def test_a_compiled_step_keeps_a_fallback_the_probe_saw() -> None:
    eager = "mamba_ssm triton selective_state_update + torch causal_conv1d_update fallback"
    assert compiled_step_label(eager, {"mamba_ssm"}) == eager
    assert compiled_step_label(TORCH_FALLBACK, set()) == TORCH_FALLBACK
