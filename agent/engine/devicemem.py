"""A memory cap that counts what a smaller GPU would hold: the process's whole device memory.

`torch.cuda.set_per_process_memory_fraction` limits PyTorch's caching allocator only. On a real 24 GB
card the CUDA context, the libraries' handles and the loaded kernel images live in the same memory, so a
cap that ignores them lets a model reach a longer context than the card would. Here the cap is the
process's device memory: the allocator gets the cap minus what the process already holds outside it,
measured (NVML's per-process figure when the driver lists this process, else the device-wide used memory
from `cudaMemGetInfo`, which assumes no other process on the device), and the method is recorded.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass

import torch

from ctxscope.agent.telemetry.base import TelemetryError

PROCESS_METHOD = "NVML nvmlDeviceGetComputeRunningProcesses, this process's used memory"
DEVICE_WIDE_METHOD = "cudaMemGetInfo total - free (device-wide: assumes no other process on the device)"


@dataclass(frozen=True)
class OutsideAllocator:
    """Device memory this process holds outside PyTorch's caching allocator."""

    bytes: int
    process_bytes: int
    allocator_reserved_bytes: int
    method: str


def _nvml_process_bytes(index: int) -> int | None:
    """This process's device memory as NVML lists it; None where NVML or the listing is unavailable
    (in a container the driver lists host process ids)."""
    from ctxscope.agent.telemetry import nvml

    try:
        nvml.init()
        import pynvml as nv

        uuid = f"GPU-{torch.cuda.get_device_properties(index).uuid}"
        handle = nvml.nvml_call(nv.nvmlDeviceGetHandleByUUID, uuid)
        processes = nvml.nvml_call(nv.nvmlDeviceGetComputeRunningProcesses, handle)
    except (TelemetryError, ImportError, AttributeError):
        return None
    finally:
        with contextlib.suppress(TelemetryError, ImportError):
            nvml.shutdown()
    used = [p.usedGpuMemory for p in processes if p.pid == os.getpid() and p.usedGpuMemory]
    return int(used[0]) if used else None


def outside_allocator(index: int) -> OutsideAllocator:
    torch.cuda.synchronize(index)
    reserved = torch.cuda.memory_reserved(index)
    process = _nvml_process_bytes(index)
    method = PROCESS_METHOD
    if process is None:
        free, total = torch.cuda.mem_get_info(index)
        process, method = total - free, DEVICE_WIDE_METHOD
    return OutsideAllocator(max(process - reserved, 0), process, reserved, method)


def apply_process_cap(index: int, cap_bytes: int) -> dict[str, object]:
    """Limit the allocator so that the process's device memory stays within `cap_bytes`.

    Call again after the model is loaded and has run once: kernel images load lazily, so the memory
    outside the allocator grows with the first forward. Raises MemoryError when the process already
    holds more than the cap outside the allocator."""
    outside = outside_allocator(index)
    total = torch.cuda.get_device_properties(index).total_memory
    budget = cap_bytes - outside.bytes
    if budget <= 0:
        raise MemoryError(
            f"the cap of {cap_bytes / 2**30:.2f} GiB is below the {outside.bytes / 2**30:.2f} GiB "
            "this process holds outside PyTorch's allocator (CUDA context and libraries)"
        )
    fraction = min(budget / total, 1.0)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return {
        "memory_cap_bytes": cap_bytes,
        "memory_cap_counts": "the process's device memory, CUDA context and libraries included",
        "memory_fraction": fraction,
        "allocator_budget_bytes": budget,
        "device_total_bytes": total,
        **{f"outside_allocator_{k}": v for k, v in asdict(outside).items()},
    }
