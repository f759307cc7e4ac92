"""The device-memory cap counts what the process holds outside PyTorch's allocator.

The CUDA calls are replaced by a fake device (this machine has no GPU); the GPU path ran on the H200
(`results/engine/study-4090/`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ctxscope.agent.engine import devicemem

GIB = 2**30


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    state: dict[str, object] = {"reserved": 3 * GIB, "used": 4 * GIB, "nvml": None, "fraction": None}
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "synchronize", lambda index=None: None)
    monkeypatch.setattr(cuda, "memory_reserved", lambda index=None: state["reserved"])
    monkeypatch.setattr(cuda, "mem_get_info", lambda index=None: (100 * GIB - state["used"], 100 * GIB))
    monkeypatch.setattr(cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=100 * GIB))
    monkeypatch.setattr(
        cuda, "set_per_process_memory_fraction", lambda f, index=None: state.__setitem__("fraction", f)
    )
    monkeypatch.setattr(devicemem, "_nvml_process_bytes", lambda index: state["nvml"])
    return state


def test_the_allocator_gets_the_cap_minus_what_the_process_holds_outside_it(fake_cuda: dict) -> None:
    cap = devicemem.apply_process_cap(0, 24 * GIB)
    # 4 GiB used on the device, 3 of them the allocator's: 1 GiB of context and libraries
    assert cap["outside_allocator_bytes"] == GIB
    assert cap["allocator_budget_bytes"] == 23 * GIB
    assert fake_cuda["fraction"] == pytest.approx(23 / 100)
    assert cap["outside_allocator_method"] == devicemem.DEVICE_WIDE_METHOD


def test_nvml_s_per_process_figure_is_preferred_when_the_driver_lists_the_process(fake_cuda: dict) -> None:
    fake_cuda["nvml"] = int(3.5 * GIB)  # another process's memory is in the device-wide figure
    cap = devicemem.apply_process_cap(0, 24 * GIB)
    assert cap["outside_allocator_bytes"] == GIB // 2
    assert cap["outside_allocator_method"] == devicemem.PROCESS_METHOD
    assert fake_cuda["fraction"] == pytest.approx(23.5 / 100)


def test_a_cap_below_the_context_is_refused_with_the_figures(fake_cuda: dict) -> None:
    with pytest.raises(MemoryError, match=r"0\.50 GiB is below the 1\.00 GiB"):
        devicemem.apply_process_cap(0, GIB // 2)
    assert fake_cuda["fraction"] is None
