"""The manifest that travels with every result (DESIGN.md 4.9): device (a GPU's properties, or the CPU's
model, cores and threads), driver, CUDA, library versions, precision, clocks, Jetson power mode, git
revision, plan hash, host.

Every field is what could be read; a field that could not be read is absent, never guessed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import ctxscope
from ctxscope.agent.packages import KERNEL_PACKAGES, installed_version

BUILD_INFO = "_build_info.json"  # written by setup.py at build time


def package_versions() -> dict[str, str]:
    """Versions of the kernel-relevant packages and of ctxscope; packages not installed are absent."""
    versions = {name: installed_version(name) for name in (*KERNEL_PACKAGES, "ctxscope")}
    return {name: version for name, version in versions.items() if version is not None}


def source_revision() -> dict[str, Any]:
    """`git_revision` (and `git_dirty`, whether the tree had uncommitted changes) as stamped into the
    package at build, else of the checkout this code runs from (a source tree or an editable install,
    which hold no stamp); empty when neither can be read. The stamp comes first: an installed package
    may lie inside some other git work tree (a board's home, a copied checkout), whose HEAD says
    nothing about the code that runs."""
    stamped = build_revision()
    if stamped:
        return stamped
    here = Path(__file__).resolve().parent
    head = _git(here, "rev-parse", "HEAD")
    if not head:
        return {}
    status = _git(here, "status", "--porcelain")  # None when it could not be read: dirty unknown, absent
    return {"git_revision": head, **({"git_dirty": bool(status)} if status is not None else {})}


def _git(cwd: Path, *args: str) -> str | None:
    """The stripped output of `git ARGS` in `cwd`, None when git is missing, fails or takes over 5 s."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def build_revision(stamp: Path | None = None) -> dict[str, Any]:
    """The revision setup.py stamped into `ctxscope/_build_info.json`, empty when absent."""
    stamp = stamp or Path(ctxscope.__file__).resolve().parent / BUILD_INFO
    if not stamp.is_file():
        return {}
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return {}
    revision = info.get("git_revision") if isinstance(info, dict) else None
    if not isinstance(revision, str) or not revision:
        return {}
    dirty = info.get("git_dirty")
    return {"git_revision": revision, **({"git_dirty": dirty} if isinstance(dirty, bool) else {})}


def attention_libraries() -> dict[str, str]:
    """cuDNN's version as torch sees it (absent where cuDNN is not available)."""
    import torch

    if not torch.backends.cudnn.is_available():
        return {}
    version = torch.backends.cudnn.version()
    return {} if not version else {"cudnn": str(version)}


def _nvml(index: int) -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {}
    info: dict[str, Any] = {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        readers = {
            "driver": lambda: pynvml.nvmlSystemGetDriverVersion(),
            "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "max_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "power_limit_mw": lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle),
            "clocks_event_reasons": lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle),
            "persistence_mode": lambda: pynvml.nvmlDeviceGetPersistenceMode(handle),
        }
        for key, read in readers.items():
            with contextlib.suppress(pynvml.NVMLError):
                value = read()
                info[key] = value.decode() if isinstance(value, bytes) else value
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return info


def _jetson() -> dict[str, Any]:
    release = Path("/etc/nv_tegra_release")
    if not release.exists():
        return {}
    info: dict[str, Any] = {"l4t_release": release.read_text().splitlines()[0].strip()}
    with contextlib.suppress(OSError):
        info["board"] = Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    for key, command in (("power_mode", ["nvpmodel", "-q"]), ("jetson_clocks", ["jetson_clocks", "--show"])):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
            if done.returncode == 0 and done.stdout.strip():
                info[key] = done.stdout.strip()[:2000]
    return info


def _cpu() -> dict[str, Any]:
    """The CPU that runs a CPU device's tensors: its model (where the OS says), cores and torch's threads."""
    import torch

    info: dict[str, Any] = {"threads": torch.get_num_threads()}
    cores = os.cpu_count()
    if cores:
        info["logical_cores"] = cores
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                info["model"] = line.split(":", 1)[1].strip()
                break
    if "model" not in info and platform.processor():
        info["model"] = platform.processor()
    return info


def collect(device: str, *, plan_hash: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """The manifest of a run on `device` ("cuda", "cuda:1", "cpu")."""
    import torch

    manifest: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {**package_versions(), **attention_libraries()},
        "device": device,
    }
    if torch.version.cuda:
        manifest["cuda_runtime"] = torch.version.cuda
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        manifest["gpu"] = {
            "name": props.name,
            "total_memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            **_nvml(index),
        }
    if device == "cpu":
        manifest["cpu"] = _cpu()
    jetson = _jetson()
    if jetson:
        manifest["jetson"] = jetson
    manifest.update(source_revision())
    if plan_hash:
        manifest["plan_hash"] = plan_hash
    if precision:
        manifest["precision"] = precision
    return manifest
