"""The study's prefill memory in its own terms, under whichever transformers is importable.

Imports neither ctxscope nor anything newer than transformers 4.x offers, so that it runs under the
transformers version the study used (4.52.3 for Qwen and Llama, 4.57.3 for Falcon-H1 and Zamba2)
installed on its own path. Per probe, what the study's memory script did: the model built from the
zoo's public config in bf16 on the device, one forward under `torch.no_grad()` of `input_ids` and the
all-ones `attention_mask` its tokenizer returns (`--mask none`: `input_ids` alone, which is what the
agent's study mode passes), `use_cache=True`, every position's logits; the peak is
`torch.cuda.max_memory_allocated` after resetting the peak statistics with the model loaded.

`--two-loads` follows the study's memory code (`src/memory/mem_footprint.py`) further for models whose
name lacks "mamba": the model is loaded and run once with `use_cache=False`, deleted (`gc.collect()`,
`torch.cuda.empty_cache()`), loaded again, and the probe runs on the second load in the same process;
what the first load and forward leave allocated is recorded (`allocated_left_by_first_forward_bytes`)
and is inside the second forward's peak, as it was inside the study's figure.

Beside the peak it records a breakdown: weights, the cache the forward returned, its logits, and every
mask handed to `scaled_dot_product_attention` (shape, dtype, bytes), so a difference between versions at
equal length can be named. On the CPU, where there is no allocator statistic, the peak is that of the
tensor storages the forward's operators created while they were alive (a dispatch-mode tracker), plus
the weights.

    PYTHONPATH=<transformers 4.52.3> python bench/engine/study_memory.py --model qwen2.5-0.5b \
        --length 57344 --out q.json
    PYTHONPATH=<transformers 4.52.3> python bench/engine/study_memory.py --model qwen2.5-0.5b \
        --length 1024 --length 2048 --device cpu --out q.json     # the tracked peak on the CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import weakref
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CONFIGS = Path(__file__).resolve().parents[2] / "agent" / "zoo" / "configs"
GIB = 1024**3


def build(name: str, device: str, layers: int | None) -> torch.nn.Module:
    """The zoo's config of `name` (public config.json), random weights, bf16, eval mode."""
    fields = json.loads((CONFIGS / f"{name}.json").read_text())
    if layers is not None:  # a shorter stack for a check on the CPU; the per-layer shapes stay
        for key in ("num_hidden_layers", "n_layer"):
            if key in fields:
                fields[key] = layers
        for key in ("layers_block_type", "layer_types"):
            if isinstance(fields.get(key), list):
                fields[key] = fields[key][:layers]
    config = transformers.AutoConfig.for_model(**fields)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    return model.to(device).eval()


class MaskRecorder:
    """Every attention mask passed to torch's scaled_dot_product_attention while installed."""

    def __init__(self) -> None:
        self.masks: list[dict[str, Any]] = []
        self.calls = 0
        self._original = torch.nn.functional.scaled_dot_product_attention

    def __enter__(self) -> MaskRecorder:
        original = self._original

        def recording(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            if isinstance(mask, torch.Tensor):
                self.masks.append(
                    {
                        "shape": list(mask.shape),
                        "dtype": str(mask.dtype),
                        "bytes": mask.numel() * mask.element_size(),
                        "storage_id": mask.untyped_storage().data_ptr(),
                    }
                )
            return original(*args, **kwargs)

        torch.nn.functional.scaled_dot_product_attention = recording
        return self

    def __exit__(self, *exc: object) -> None:
        torch.nn.functional.scaled_dot_product_attention = self._original

    def summary(self) -> dict[str, Any]:
        distinct = {m["storage_id"]: m for m in self.masks}
        return {
            "sdpa_calls": self.calls,
            "calls_with_mask": len(self.masks),
            "distinct_masks": [{k: v for k, v in m.items() if k != "storage_id"} for m in distinct.values()],
            "distinct_mask_bytes": sum(m["bytes"] for m in distinct.values()),
        }


class StoragePeak(TorchDispatchMode):
    """Bytes of the tensor storages that operators create, alive at once, at their most (CPU).

    Storages that existed before (weights, inputs) are not counted, nor are views of them."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.counted: dict[int, int] = {id(t.untyped_storage()): 0 for t in existing}
        self.live = 0
        self.peak = 0

    def _freed(self, key: int, size: int) -> None:
        self.live -= size
        self.counted.pop(key, None)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                if id(storage) not in self.counted:
                    size = storage.nbytes()
                    self.counted[id(storage)] = size
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._freed, id(storage), size)
        return out


def tensor_bytes(value: Any, seen: set[tuple[str, int]] | None = None) -> int:
    """Bytes of every distinct tensor storage reachable through attributes, lists, tuples and dicts
    (each object walked once, so a cycle ends)."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        key = ("storage", value.untyped_storage().data_ptr())
        if key in seen or value.device.type == "meta":
            return 0
        seen.add(key)
        return value.untyped_storage().nbytes()
    if ("object", id(value)) in seen:
        return 0
    seen.add(("object", id(value)))
    if isinstance(value, dict):
        return sum(tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in value)
    if hasattr(value, "__dict__"):
        return sum(tensor_bytes(v, seen) for v in vars(value).values())
    return 0


def probe(model: torch.nn.Module, length: int, mask: str, device: str) -> dict[str, Any]:
    ids = torch.full(
        (1, length), 4, dtype=torch.long, device=device
    )  # one repeated token, as the study's prompt
    inputs: dict[str, torch.Tensor] = {"input_ids": ids}
    if mask == "tokenizer":
        inputs["attention_mask"] = torch.ones_like(ids)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    started = time.perf_counter()
    row: dict[str, Any] = {"length": length, "mask": mask}
    existing = [*model.parameters(), *model.buffers(), *inputs.values()]
    tracker = None if cuda else StoragePeak(existing)
    try:
        with torch.no_grad(), MaskRecorder() as masks, tracker or nullcontext():
            output = model(**inputs, use_cache=True)
    except torch.cuda.OutOfMemoryError as exc:
        row.update(outcome="oom", error=str(exc).splitlines()[0][:300])
        return row
    if tracker is not None:
        row["cpu_tracked_peak_bytes"] = tracker.peak + sum(t.untyped_storage().nbytes() for t in existing)
    if cuda:
        torch.cuda.synchronize(device)
        row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        row["allocated_before_bytes"] = before
        row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    row.update(
        outcome="ok",
        seconds=time.perf_counter() - started,
        logits={"shape": list(output.logits.shape), "dtype": str(output.logits.dtype)},
        logits_bytes=output.logits.numel() * output.logits.element_size(),
        cache_bytes=tensor_bytes(getattr(output, "past_key_values", None)),
        **masks.summary(),
    )
    del output
    return row


def first_load_and_forward(args: argparse.Namespace, length: int) -> dict[str, Any]:
    """The study's first pass: load, one forward with `use_cache=False`, delete, collect, empty the
    cache; what is left allocated after it (CUDA)."""
    model = build(args.model, args.device, args.layers)
    ids = torch.full((1, length), 4, dtype=torch.long, device=args.device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        output = model(**inputs, use_cache=False)
    del output, model, inputs, ids
    gc.collect()
    first: dict[str, Any] = {"outcome": "ok"}
    if args.device.startswith("cuda"):
        torch.cuda.synchronize(args.device)
        torch.cuda.empty_cache()
        first["allocated_left_by_first_forward_bytes"] = torch.cuda.memory_allocated(args.device)
        first["first_forward_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(args.device)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a zoo name, e.g. qwen2.5-0.5b")
    parser.add_argument("--length", type=int, action="append", required=True, help="repeat for several")
    parser.add_argument("--mask", choices=["tokenizer", "none", "both"], default="both")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, help="fewer layers (a check on the CPU)")
    parser.add_argument(
        "--two-loads",
        action="store_true",
        help="the study's protocol: a first load and forward with use_cache=False, deleted, before the probe",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    first = first_load_and_forward(args, args.length[0]) if args.two_loads else None
    model = build(args.model, args.device, args.layers)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    report: dict[str, Any] = {
        "command": "python bench/engine/study_memory.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "layers": args.layers,
        "weights_bytes": weights,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cuda_device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        },
        "first_load_and_forward": first,
        "probes": [],
    }
    for length in args.length:
        for mask in ("tokenizer", "none") if args.mask == "both" else (args.mask,):
            row = probe(model, length, mask, args.device)
            report["probes"].append(row)
            peak = row.get("peak_allocated_bytes", row.get("cpu_tracked_peak_bytes"))
            print(
                f"{args.model} {length} mask={mask} {row['outcome']}: "
                + (f"peak {peak / GIB:.2f} GiB, " if peak else "")
                + f"logits {row.get('logits_bytes', 0) / GIB:.2f} GiB, "
                f"cache {row.get('cache_bytes', 0) / GIB:.2f} GiB, "
                f"masks {row.get('distinct_mask_bytes', 0) / GIB:.3f} GiB "
                f"({row.get('calls_with_mask', 0)} of {row.get('sdpa_calls', 0)} SDPA calls with a mask)"
            )
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
