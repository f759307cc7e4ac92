"""`ctxscope agent models`: the zoo as a table (or JSON): sizes computed from each config, no model built."""

from __future__ import annotations

import json
from typing import Any

import click

KV_DTYPE_NAME = "bfloat16"


def zoo_rows() -> list[dict[str, Any]]:
    """One JSON-ready row per entry; sizes at bf16 (SSM state as transformers keeps it, and as mamba_ssm
    keeps it for the pure SSM entries); unbuildable entries keep their reason and no sizes."""
    import torch

    from ctxscope.agent.zoo.architectures import architecture
    from ctxscope.agent.zoo.sizes import (
        cache_bytes_per_token,
        parameter_count,
        ssd_int32_limit_tokens,
        state_bytes,
    )
    from ctxscope.agent.zoo.spec import list_models

    dtype = getattr(torch, KV_DTYPE_NAME)
    rows = []
    for spec in list_models():
        row: dict[str, Any] = {
            "name": spec.name,
            "family": spec.family,
            "model_type": spec.model_type,
            "checkpoint": spec.checkpoint,
            "available": spec.unavailable is None,
            "unavailable_reason": spec.unavailable,
            "source": spec.source,
            "note": spec.note,
        }
        if spec.unavailable is None:
            parameters = parameter_count(spec)
            row |= {
                "parameters": parameters,
                "weight_bytes_bf16": parameters * dtype.itemsize,
                "kv_cache_bytes_per_token_bf16": cache_bytes_per_token(spec, dtype),
                "state_bytes_bf16": state_bytes(spec, dtype),
                "ssd_int32_limit_tokens": ssd_int32_limit_tokens(spec),
            }
            if architecture(spec.model_type).native:
                row["state_bytes_bf16_mamba_ssm"] = state_bytes(spec, dtype, runtime="mamba_ssm")
        rows.append(row)
    return rows


def _human(count: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(count) < 1000:
            return f"{count:.3g}{suffix}{unit}" if suffix else f"{count:.0f}{unit}"
        count /= 1000
    return f"{count:.3g}P{unit}"


def _bytes(value: int) -> str:
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or suffix == "GiB":
            return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
        value /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _tokens(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@click.option("--kernels", is_flag=True, help="Also list the kernel packages usable on this machine.")
def models(as_json: bool, kernels: bool) -> None:
    """List the model zoo: family, parameters, KV cache bytes/token and SSM state bytes (bf16), and
    the longest prompt mamba_ssm's SSD kernels can index (32-bit offsets) for Mamba-2 style mixers."""
    from ctxscope.agent.zoo.kernels import kernel_availability

    rows = zoo_rows()
    availability = kernel_availability() if kernels else None
    if as_json:
        payload: Any = rows if availability is None else {"models": rows, "kernels": availability}
        click.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ctxscope model zoo (sizes at bf16, computed from the public configs)")
    for column, justify in (
        ("name", "left"),
        ("family", "left"),
        ("model_type", "left"),
        ("parameters", "right"),
        ("KV / token", "right"),
        ("SSM state", "right"),
        ("SSD limit (tokens)", "right"),
        ("availability", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column == "name")  # type: ignore[arg-type]
    for row in rows:
        if row["available"]:
            sizes = (
                _human(row["parameters"]),
                _bytes(row["kv_cache_bytes_per_token_bf16"]),
                _bytes(row["state_bytes_bf16"]),
                _tokens(row["ssd_int32_limit_tokens"]),
            )
            status = "yes"
        else:
            sizes = ("—", "—", "—", "—")
            status = "no (below)"
        table.add_row(row["name"], row["family"], row["model_type"], *sizes, status)
    console = Console()
    console.print(table)
    for row in rows:
        if not row["available"]:
            console.print(f"{row['name']} is unavailable: {row['unavailable_reason']}")
    if availability is not None:
        kernel_table = Table(title="kernel packages on this machine")
        kernel_table.add_column("package")
        kernel_table.add_column("status")
        for package, status in availability.items():
            kernel_table.add_row(package, status)
        console.print(kernel_table)
