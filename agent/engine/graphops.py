"""Which kernel packages' operations a compiled decode step holds, read from its compiled graph.

The model's kernel path (`implementation.ssm_step`, `zoo.kernels`) is observed on an eager probe step:
which package functions (mamba_ssm, causal_conv1d) it entered. A compiled step need not run the same
code: torch.compile traces the model again and may take other branches, and its generated code calls
kernels directly, so a package function's entry cannot be watched there. On an H100 the compiled
static-cache step of Falcon-H1-0.5B ran aten's depthwise convolution where the eager probe had seen the
causal_conv1d package's update called (`results/engine/decode-tuning/README.md`).

So the compile (`inductor_backend`) takes a census of the graph dynamo traced, before handing it to
inductor: its operations that come from outside torch, a package's custom operator (named as the
dispatcher knows it, e.g. `DaoAILab::_causal_conv1d_update_cpp`) or a user Triton kernel (captured as
a Triton wrapper node, named by the module of its `@triton.jit` function, e.g.
`mamba_ssm.ops.triton.selective_state_update._selective_scan_update_kernel`). An operator's namespace
need not name its package (causal_conv1d registers its operators under `DaoAILab`), so `packages()`
takes the package from the module of the Python function that defined the operator.
Dynamo traces in every process, so the census is taken even where inductor then takes the compiled
code from its cache. `seen_since()` gives what the compiles since a `tally()` held.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

# Operator namespaces of torch itself: everything else is some package's.
TORCH_NAMESPACES = frozenset({"aten", "prims", "inductor", "higher_order", "_c10d_functional", "quantized"})
_seen: Counter[str] = Counter()
_unread: list[str] = []  # why a graph's census failed (the compile goes on without it)


def _triton_wrappers() -> tuple[Any, ...]:
    from torch._higher_order_ops import triton_kernel_wrap

    return (
        triton_kernel_wrap.triton_kernel_wrapper_functional,
        triton_kernel_wrap.triton_kernel_wrapper_mutation,
    )


def _triton_kernel_name(node: torch.fx.Node) -> str:
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    kernel = kernel_side_table.get_kernel(int(node.kwargs["kernel_idx"]))  # type: ignore[arg-type]
    function = kernel
    for _ in range(4):  # autotuners and heuristics wrap the @triton.jit function, which wraps the Python one
        function = getattr(function, "fn", function)
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__name__', type(function).__name__)}"


def operation_of(node: torch.fx.Node, wrappers: tuple[Any, ...]) -> str | None:
    """The package operation a graph node calls (`namespace::name` or a Triton kernel's qualified
    name), None for torch's own."""
    if node.op != "call_function":
        return None
    if node.target in wrappers:
        return _triton_kernel_name(node)
    target = node.target
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        packet = isinstance(target, torch._ops.OpOverloadPacket)
        qualified = target._qualified_op_name if packet else target.name()  # type: ignore[union-attr]
        namespace = qualified.split("::")[0]
        return None if namespace in TORCH_NAMESPACES else qualified.split(".")[0]
    return None


def inductor_backend(options: dict[str, Any]) -> Any:
    """torch.compile's inductor with `options`, as `torch.compile(backend="inductor", options=...)`
    makes it, taking the census of each graph dynamo hands it first."""
    inductor = torch._TorchCompileInductorWrapper(None, options, False)

    def backend(module: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        census(module.graph)
        return inductor(module, example_inputs)

    return backend


def census(graph: torch.fx.Graph) -> None:
    """Count the graph's package operations; a graph it cannot read is noted, never fails the compile."""
    try:
        wrappers = _triton_wrappers()
        operations = [operation_of(node, wrappers) for node in graph.nodes]
    except Exception as exc:  # a torch whose graphs look otherwise: the step compiles all the same
        _unread.append(f"{type(exc).__name__}: {exc}"[:300])
        return
    _seen.update(operation for operation in operations if operation is not None)


def tally() -> tuple[Counter[str], int]:
    return Counter(_seen), len(_unread)


def seen_since(before: tuple[Counter[str], int]) -> dict[str, int] | str:
    """Package operations of the graphs compiled since `before` (a `tally()`), with their counts; or why
    one of those graphs could not be read."""
    seen, unread = before
    if len(_unread) > unread:
        return f"not read: {_unread[-1]}"
    return dict(sorted((_seen - seen).items()))


def packages(operations: dict[str, int]) -> set[str]:
    """The packages the operations come from: a Triton kernel's top-level module; for an operator, the
    top-level module of the Python function that defined it, or its namespace if it has none (one
    registered from C++)."""
    return {_operator_package(name) if "::" in name else name.split(".")[0] for name in operations}


def _operator_package(qualname: str) -> str:
    from torch._library.custom_ops import OPDEFS

    module = getattr(getattr(OPDEFS.get(qualname), "_init_fn", None), "__module__", None)
    return module.split(".")[0] if isinstance(module, str) and module else qualname.split("::")[0]
