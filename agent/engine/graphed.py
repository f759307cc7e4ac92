"""The CUDA-graph decoders' common part: capture order (compiled step first, then the uncompiled
one), the replay check against an uncompiled eager step from the same state, and stepping by replay.
`hf_decode.HFStaticDecoder` and `native_decode.NativeCompiledDecoder` build on it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# A graph replay may differ from the eager step it recorded by rounding only; a larger difference
# (in units of the largest eager logit) means the capture went wrong, and the graph is not used.
REPLAY_TOLERANCE = 0.05
# How a compiled step's kernels are launched (`implementation.decode_combo_kernels`): inductor's combo
# kernels put independent kernels of the step (a layer's parallel branches, its separate projections)
# into shared launches; on an H100 they took Falcon-H1-0.5B's step at 32K from 800 to 659 kernels.
COMBO_LABEL = "combined (inductor combo_kernels: independent kernels share launches)"
COMBO_OFF_LABEL = "one launch per fused kernel (the plan's combo_kernels is false)"
COMBO_MISSING_LABEL = "one launch per fused kernel (this torch's inductor has no combo_kernels)"
# Whether a compiled step's Triton kernels use programmatic dependent launch
# (`implementation.decode_dependent_launch`): on Hopper and newer a kernel so compiled is launched while
# the one before it still runs and waits (`gdc_wait`) only where it reads that one's output, so the
# launch latencies of a step of ~500 small kernels overlap. On an H100, Qwen2.5-0.5B's step at 16K
# took 0.970 ms with it against 1.013 ms without (results/engine/decode-tuning/h100/pdl/).
PDL_LABEL = (
    "programmatic dependent launch (inductor triton.enable_pdl: a kernel starts while the one before it runs)"
)
PDL_OFF_LABEL = "each kernel starts once the one before it has ended (the plan's dependent_launch is false)"
PDL_FAILED_LABEL = (
    "each kernel starts once the one before it has ended (the step with dependent launch failed to compile"
    " or replay right; the record's decode_note says how)"
)


@dataclass(frozen=True)
class StepCompile:
    """How a decode step captured in a CUDA graph is compiled: its one-row matrix products as
    reductions (`onerow`; else they stay GEMMs), inductor's combo kernels (else one launch per fused
    kernel) and programmatic dependent launch where the device and torch have it. The plan's
    `one_row_reductions`, `combo_kernels` and `dependent_launch`."""

    one_row: bool = True
    combo: bool = True
    pdl: bool = True


ENGINE_COMPILE = StepCompile()  # the engine's default: all three on


class GraphedDecoder:
    """What every decoder that captures its step in a CUDA graph shares: the capture order (compiled
    step first, then the uncompiled one), the replay check against an uncompiled eager step from the
    same state, and stepping by replay.

    A subclass sets `module` (the uncompiled step's callable), `token`, `used` and `window`, and
    provides `_forward` (one step through `forward`, default `_step_forward`, writing `last_logits`
    and the next `token` in place) and `rewind` (back to the prompt, states restored)."""

    module: Any
    token: torch.Tensor
    window: int
    used: int
    path: str
    last_logits: torch.Tensor

    def _init_graph(self, options: StepCompile) -> None:
        self.one_row = options.one_row
        self.combo = options.combo
        self.pdl = options.pdl  # turned off when the step with dependent launch fails
        self.pdl_off_label = PDL_OFF_LABEL  # why not, when it is not asked for
        self.graph: torch.cuda.CUDAGraph | None = None
        self.note: str | None = None
        self.graph_breaks: int | None = None  # of the compiled step, as dynamo counted them
        self.one_row_path: str | None = None  # the compiled step's one-row products (onerow.LABEL)
        self.one_row_products: str | None = None  # and what its compile did with them
        self.combo_path: str | None = None  # the compiled step's launches (COMBO_LABEL)
        self.pdl_path: str | None = None  # and whether they overlap (PDL_LABEL)
        self._step_forward: Callable[..., Any] = self.module
        self._breaks_before = 0
        self._one_row_before = (0, 0, 0)
        # the kernel packages' operations the compiled step's graph holds (graphops); None uncompiled
        self.package_ops: dict[str, int] | str | None = None
        self._ops_before: tuple[Counter[str], int] = (Counter(), 0)

    def _forward(self, forward: Callable[..., Any] | None = None) -> None:
        raise NotImplementedError

    def rewind(self) -> None:
        raise NotImplementedError

    def _capture_first_good(self, attempts: list[tuple[str, Callable[[], Callable[..., Any]]]]) -> list[str]:
        """Capture each attempt's step in turn until one passes the replay check; sets `path` to it.
        Returns what went wrong with the attempts before it (all of them when none passed)."""
        problems: list[str] = []
        for path, make_forward in attempts:
            try:
                self._step_forward = make_forward()
                self._capture()
                problem = self._check_replay()
            except Exception as exc:  # compile and capture failures alike: the next path is tried
                problem = f"failed: {type(exc).__name__}: {str(exc)[:500]}"
            if problem is None:
                self.path = path
                return problems
            tried = f"{path} with dependent launch" if self.pdl_path == PDL_LABEL else path
            problems.append(f"{tried} {problem}")
            self.graph = None
            self.one_row_path = self.one_row_products = self.combo_path = self.pdl_path = None
            self.package_ops = None
            self._step_forward = self.module
            self.rewind()
        return problems

    def _compiled_attempts(self, path: str) -> list[tuple[str, Callable[[], Callable[..., Any]]]]:
        """The compiled step to capture; where it would launch its kernels dependently, the same step
        without that next, so that a Triton build whose dependent launch fails to compile or to replay
        right costs the launch only, not the compiled step (`_capture_first_good` notes the failure)."""
        attempts = [(path, self._compiled_forward)]
        if self.pdl and dependent_launch_missing(self.token.device) is None:
            attempts.append((path, self._compiled_forward_without_pdl))
        return attempts

    def _compiled_forward_without_pdl(self) -> Callable[..., Any]:
        self.pdl, self.pdl_off_label = False, PDL_FAILED_LABEL
        return self._compiled_forward()

    def _compiled_forward(self) -> Callable[..., Any]:
        """The module compiled for this decoder's shapes (compiled on its first call), its one-row
        matrix products as reductions (`onerow`), its independent kernels combined (inductor's
        `combo_kernels`) and its Triton kernels launched dependently (`triton.enable_pdl`, where the
        device and torch have it) unless the decoder was made without them."""
        import torch._dynamo

        from ctxscope.agent.engine import graphops, onerow

        torch._dynamo.reset()
        options = onerow.compile_options() if self.one_row else {}
        if not self.combo:
            self.combo_path = COMBO_OFF_LABEL
        elif has_combo_kernels():
            options["combo_kernels"] = True
            self.combo_path = COMBO_LABEL
        else:  # an older torch (a board's vendor build): compiled without, and the record says so
            self.combo_path = COMBO_MISSING_LABEL
        missing = dependent_launch_missing(self.token.device)
        if not self.pdl:
            self.pdl_path = self.pdl_off_label
        elif missing:
            self.pdl_path = f"each kernel starts once the one before it has ended ({missing})"
        else:
            options["triton.enable_pdl"] = True
            self.pdl_path = PDL_LABEL
        compiled = torch.compile(self.module, dynamic=False, backend=graphops.inductor_backend(options))
        self._breaks_before = _graph_breaks()
        self._one_row_before = onerow.tally()
        self._ops_before = graphops.tally()
        return compiled

    def warm_up(self, steps: int = 2) -> None:
        """`steps` steps, each from the prompt (a window of one position holds one step), then back."""
        for _ in range(steps):
            self.rewind()
            self._forward()
        self.rewind()

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.warm_up()
        torch.cuda.current_stream().wait_stream(side)
        if self._step_forward is not self.module:
            from ctxscope.agent.engine import graphops, onerow

            self.graph_breaks = _graph_breaks() - self._breaks_before
            self.package_ops = graphops.seen_since(self._ops_before)
            self.one_row_path = onerow.LABEL if self.one_row else onerow.OFF_LABEL
            self.one_row_products = onerow.describe(self._one_row_before) if self.one_row else None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._forward()
        self.graph = graph
        self.graph_logits = self.last_logits  # the graph's output buffer
        self.rewind()

    def _check_replay(self) -> str | None:
        """One replay against one uncompiled eager step from the same state (the prompt's): None when
        they agree within REPLAY_TOLERANCE, else a note saying by how much they did not."""
        assert self.graph is not None
        self._forward(self.module)
        eager = self.last_logits.float().clone()
        self.rewind()
        self.graph.replay()
        replayed = self.graph_logits.float()
        self.rewind()
        self.last_logits = self.graph_logits
        difference = float((replayed - eager).abs().max())
        largest = float(eager.abs().max())
        if difference <= REPLAY_TOLERANCE * largest:
            return None
        return (
            f"replay disagreed with an eager step from the same state (max |logit "
            f"difference| {difference:.3g}, largest logit {largest:.3g})"
        )

    def step(self) -> None:
        if self.used == self.window:
            self.rewind()
        if self.graph is not None:
            self.graph.replay()
            self.last_logits = self.graph_logits
        else:
            self._forward()
        self.used += 1


def has_combo_kernels() -> bool:
    """Whether this torch's inductor has the combo_kernels option (torch 2.11 has; older builds may not)."""
    import torch._inductor.config as inductor_config

    return hasattr(inductor_config, "combo_kernels")


def dependent_launch_missing(device: torch.device) -> str | None:
    """Why a step compiled for `device` cannot use programmatic dependent launch; None when it can."""
    import torch._inductor.config as inductor_config

    if not hasattr(inductor_config.triton, "enable_pdl"):
        return "this torch's inductor has no triton.enable_pdl"
    if device.type != "cuda":
        return f"programmatic dependent launch is CUDA's, this step runs on the {device.type}"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 9:
        return f"it needs compute capability 9.0 or newer, this GPU has {major}.{minor}"
    return None


def _graph_breaks() -> int:
    """Graph breaks dynamo has counted in this process."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())
