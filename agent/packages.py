"""Versions of the packages that decide which kernels run: one list for the manifest of every result
and for the kernel report of `ctxscope agent models --kernels`."""

from __future__ import annotations

from importlib import metadata

KERNEL_PACKAGES = ("torch", "transformers", "mamba_ssm", "causal_conv1d", "flash_attn", "triton")
_DIST_NAMES = {"mamba_ssm": "mamba-ssm", "causal_conv1d": "causal-conv1d", "flash_attn": "flash-attn"}


def installed_version(import_name: str) -> str | None:
    """Version of the distribution that provides `import_name`, or None when it is not installed."""
    try:
        return metadata.version(_DIST_NAMES.get(import_name, import_name))
    except metadata.PackageNotFoundError:
        return None
