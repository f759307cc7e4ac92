"""Forward adapters per runtime: prefill, and a decoder that steps one token at a fixed context.

Two runtimes come out of the zoo: Hugging Face transformers modules and native mamba_ssm
`MambaLMHeadModel`s. Prefill keeps last-position logits (`logits_to_keep=1` /
`num_last_tokens=1`) or all positions (the study's mode). Decoders run after one prefill and step
one greedy token at a time; they rewind to the prompt length every `window` steps so that every
step sees the context being measured. Which decode path ran is the decoder's `path`:

- `compiled_cuda_graph_static_cache`: the step below, compiled by torch.compile (inductor fuses the
  hundreds of small kernels of an eager step: Qwen2.5-0.5B at 4K on an H200 runs 1,106 kernels per
  step, 2.2 ms of kernel time, for 0.24 ms of HBM traffic) before it is captured, its one-row
  matrix products generated as reductions (`onerow`) and its independent kernels combined into
  shared launches (inductor's `combo_kernels`). Each decoder compiles afresh
  (`torch._dynamo.reset()`), so no recompile limit can turn it back to eager unnoticed; the graph
  breaks dynamo reports, and how many products were rewritten, are recorded;
- `cuda_graph_static_cache`: transformers StaticCache filled from the prefill, one decode step
  captured in a `torch.cuda.CUDAGraph` and replayed (hybrids too: their attention layers get static
  key/value buffers, their Mamba layers keep the fixed-size conv and SSM states of the prefill); the
  first replay is checked against an uncompiled eager step from the same state, and a disagreement
  drops the graph (the compiled one for the plain one, the plain one for the eager static cache),
  with a note saying why;
- `eager_static_cache`: the same step without a graph (CPU);
- `compiled_cuda_graph_mamba_ssm`: mamba_ssm's step (its conv, selective-state and norm kernels)
  compiled by torch.compile (one-row products as reductions too) and captured in a CUDA graph,
  checked against an eager step like the static cache's; attention-free models only;
- `mamba_ssm_cuda_graph`: mamba_ssm's own graph cache (`update_graph_cache`) of its uncompiled step.
  `auto` times it against the compiled step and keeps the faster (on an H200 compiling made
  Mamba-2's step faster and Mamba-1's slower), or falls back to it, with a note, when the compiled
  step fails;
- `mamba_ssm_eager`: mamba_ssm's step path without graphs;
- `eager_dynamic_cache`: transformers' default cache, one Python forward per token.
"""

from __future__ import annotations

import gc
import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from ctxscope.agent.engine.attention import ATTENTION_NAME
from ctxscope.agent.engine.loop import Timer
from ctxscope.agent.zoo.hfcache import hf_cache, hf_cache_kwarg

LogitsMode = Literal["last", "all"]
# auto: the fastest path the device allows (compiled graph on a GPU); graph: the graph of the
# uncompiled step (no compile time); eager: transformers' default cache, one forward per token.
DecodePreference = Literal["auto", "graph", "eager"]
# A graph replay may differ from the eager step it recorded by rounding only; a larger difference
# (in units of the largest eager logit) means the capture went wrong, and the graph is not used.
REPLAY_TOLERANCE = 0.05
# How a compiled step's kernels are launched (`implementation.decode_combo_kernels`): inductor's combo
# kernels put independent kernels of the step (a layer's parallel branches, its separate projections)
# into shared launches; on an H100 they took Falcon-H1-0.5B's step at 32K from 800 to 659 kernels.
COMBO_LABEL = "combined (inductor combo_kernels: independent kernels share launches)"
COMBO_OFF_LABEL = "one launch per fused kernel (the plan's combo_kernels is false)"
COMBO_MISSING_LABEL = "one launch per fused kernel (this torch's inductor has no combo_kernels)"
# A timed choice between decode paths: blocks of steps per candidate, the median block decides.
CHOICE_BLOCKS, CHOICE_STEPS = 3, 16


@dataclass
class PrefillOutput:
    """The logits of one prefill and whatever object holds its cache or state tensors."""

    logits: torch.Tensor
    cache: Any


class Decoder(Protocol):
    path: str
    window: int

    def step(self) -> None:
        """Decode one token at the measured context."""
        ...

    def rewind(self) -> None:
        """Return to the prompt length (untimed)."""
        ...

    def state(self) -> Any:
        """The object holding the decode cache, for measuring its size."""
        ...


def synthetic_prompt(vocab_size: int, length: int, *, seed: int, device: torch.device) -> torch.Tensor:
    """Random token ids (seeded), batch 1."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (1, length), generator=generator).to(device)


def keep_count(mode: LogitsMode) -> int:
    """Positions of logits to keep: 1 for last-token, 0 (= all) for the study's mode."""
    return 1 if mode == "last" else 0


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers


def hf_prefill(module: torch.nn.Module, ids: torch.Tensor, mode: LogitsMode) -> PrefillOutput:
    output = module(input_ids=ids, use_cache=True, logits_to_keep=keep_count(mode))
    return PrefillOutput(output.logits, hf_cache(output))


class HFEagerDecoder:
    """One Python forward per token on transformers' default (dynamic or hybrid) cache."""

    path = "eager_dynamic_cache"

    def __init__(self, module: torch.nn.Module, ids: torch.Tensor, window: int) -> None:
        self.module = module
        self.window = window
        self.cache_kwarg = hf_cache_kwarg(module)
        output = module(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.cache = hf_cache(output)
        self.last_logits: torch.Tensor = output.logits
        self.token = output.logits[:, -1:].argmax(-1)
        self.prompt_len = ids.shape[1]
        self.used = 0

    def step(self) -> None:
        if self.used == self.window:
            self.rewind()
        self.used += 1
        output = self.module(
            input_ids=self.token, use_cache=True, logits_to_keep=1, **{self.cache_kwarg: self.cache}
        )
        self.last_logits = output.logits
        self.token = output.logits[:, -1:].argmax(-1)

    def rewind(self) -> None:
        self.used = 0
        # Attention layers drop the decoded positions; recurrent (SSM) states keep a fixed size, and
        # their values do not change the cost of a step, so they are left as they are.
        for layer in getattr(self.cache, "layers", ()):
            keys = getattr(layer, "keys", None)
            if isinstance(keys, torch.Tensor) and keys.dim() == 4 and keys.shape[-2] > self.prompt_len:
                layer.keys = keys[:, :, : self.prompt_len]
                layer.values = layer.values[:, :, : self.prompt_len]

    def state(self) -> Any:
        return self.cache


class GraphedDecoder:
    """What every decoder that captures its step in a CUDA graph shares: the capture order (compiled
    step first, then the uncompiled one), the replay check against an uncompiled eager step from the
    same state, and stepping by replay.

    A subclass sets `module` (the uncompiled step's callable), `token`, `used` and `window`, and
    provides `_forward` (one step through `forward`, default `_step_forward`, writing `last_logits`
    and the next `token` in place) and `rewind` (back to the prompt, states restored)."""

    module: Any
    window: int
    used: int
    path: str
    last_logits: torch.Tensor

    def _init_graph(self, one_row: bool, combo: bool) -> None:
        self.one_row = one_row  # compile the one-row products as reductions (else they stay GEMMs)
        self.combo = combo  # compile with inductor's combo kernels (else one launch per fused kernel)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.note: str | None = None
        self.graph_breaks: int | None = None  # of the compiled step, as dynamo counted them
        self.one_row_path: str | None = None  # the compiled step's one-row products (onerow.LABEL)
        self.one_row_products: str | None = None  # and what its compile did with them
        self.combo_path: str | None = None  # the compiled step's launches (COMBO_LABEL)
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
            problems.append(f"{path} {problem}")
            self.graph = None
            self.one_row_path = self.one_row_products = self.combo_path = self.package_ops = None
            self._step_forward = self.module
            self.rewind()
        return problems

    def _compiled_forward(self) -> Callable[..., Any]:
        """The module compiled for this decoder's shapes (compiled on its first call), its one-row
        matrix products as reductions (`onerow`) and its independent kernels combined (inductor's
        `combo_kernels`) unless the decoder was made without them."""
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


class HFStaticDecoder(GraphedDecoder):
    """A transformers StaticCache filled from a dynamic prefill, stepped with an explicit 4D mask.

    The prefill runs on the default cache (so the causal kernel runs without a materialized
    L x L mask); its keys and values are copied into a StaticCache of `prompt + window` positions,
    and the conv and SSM states of hybrid models' Mamba layers (fixed-size tensors that decode
    updates in place) are handed over, with a copy kept so that a rewind restores them. The step
    function uses only device-side state (positions, mask, next token), so on a GPU it is captured
    once in a CUDA graph and replayed.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        ids: torch.Tensor,
        window: int,
        *,
        graph: bool,
        compile_step: bool = False,
        one_row: bool = True,
        combo: bool = True,
    ) -> None:
        from transformers import StaticCache

        self.module = module
        self.window = window
        self.cache_kwarg = hf_cache_kwarg(module)
        self.prompt_len = ids.shape[1]
        capacity = self.prompt_len + window
        output = module(input_ids=ids, use_cache=True, logits_to_keep=1)
        dynamic = hf_cache(output)
        config: Any = module.config
        self.cache = StaticCache(config=config, max_cache_len=capacity)
        # StaticCache types its layers as a union of layer kinds; static_cache_supported() made sure
        # that each one is a static attention layer, a Mamba state layer, or both.
        if len(self.cache.layers) != len(dynamic.layers):
            raise TypeError("static and dynamic caches have different layer counts")
        self.layers: list[Any] = []  # the layers with attention, whose length rewind() resets
        self.states: list[torch.Tensor] = []  # Mamba conv and SSM states, which rewind() restores
        static_layer: Any
        for static_layer, dynamic_layer in zip(self.cache.layers, dynamic.layers, strict=True):
            if _is_attention_layer(static_layer):
                static_layer.lazy_initialization(dynamic_layer.keys, dynamic_layer.values)
                static_layer.keys[:, :, : self.prompt_len].copy_(dynamic_layer.keys)
                static_layer.values[:, :, : self.prompt_len].copy_(dynamic_layer.values)
                self.layers.append(static_layer)
            if _is_state_layer(static_layer):
                _hand_over_states(dynamic_layer, static_layer)
                for field in ("conv_states", "recurrent_states"):
                    self.states += [t for t in getattr(static_layer, field).values() if t is not None]
        self.prompt_states = [t.clone() for t in self.states]
        device = ids.device
        self.last_logits: torch.Tensor = output.logits
        self.token = output.logits[:, -1:].argmax(-1)
        self.prompt_token = self.token.clone()  # the prefill's next token, where every window starts
        del output, dynamic
        self.position = torch.full((1, 1), self.prompt_len, dtype=torch.long, device=device)
        self.slots = torch.arange(capacity, device=device).view(1, 1, 1, capacity)
        dtype = next(module.parameters()).dtype
        self.open = torch.zeros((), dtype=dtype, device=device)
        self.closed = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
        self.used = 0
        self._init_graph(one_row, combo)
        self.rewind()
        self.path = "eager_static_cache"
        if graph:
            self._capture_best(compile_step)

    def _capture_best(self, compile_step: bool) -> None:
        """Capture the compiled step, else the plain one; each must pass the replay check."""
        attempts: list[tuple[str, Callable[[], Callable[..., Any]]]] = []
        if compile_step:
            attempts.append(("compiled_cuda_graph_static_cache", self._compiled_forward))
        attempts.append(("cuda_graph_static_cache", lambda: self.module))
        problems = self._capture_first_good(attempts)
        if problems:
            self.note = "; ".join(problems) + f"; {self.path} used"

    def _forward(self, forward: Callable[..., Any] | None = None) -> None:
        mask = torch.where(self.slots <= self.position.view(1, 1, 1, 1), self.open, self.closed)
        output = (forward or self._step_forward)(
            input_ids=self.token,
            position_ids=self.position,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kwarg: self.cache},
        )
        self.last_logits = output.logits
        self.token.copy_(output.logits[:, -1:].argmax(-1))
        self.position.add_(1)

    def rewind(self) -> None:
        """Back to the prompt: attention lengths reset, Mamba states and the next input token
        restored (the warm-up and capture steps must not leave them advanced)."""
        for layer in self.layers:
            layer.cumulative_length.fill_(self.prompt_len)
        for state, saved in zip(self.states, self.prompt_states, strict=True):
            state.copy_(saved)
        self.token.copy_(self.prompt_token)
        self.position.fill_(self.prompt_len)
        self.used = 0

    def state(self) -> Any:
        return self.cache


# The fields of transformers' linear-attention (Mamba) cache layers that hold their state.
_STATE_FIELDS = (
    "conv_states",
    "recurrent_states",
    "is_conv_states_initialized",
    "is_recurrent_states_initialized",
    "has_previous_state",
    "conv_kernel_size",
)


def has_combo_kernels() -> bool:
    """Whether this torch's inductor has the combo_kernels option (torch 2.11 has; older builds may not)."""
    import torch._inductor.config as inductor_config

    return hasattr(inductor_config, "combo_kernels")


def _graph_breaks() -> int:
    """Graph breaks dynamo has counted in this process."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


def _is_attention_layer(layer: Any) -> bool:
    from transformers.cache_utils import StaticLayer

    return isinstance(layer, StaticLayer)


def _is_state_layer(layer: Any) -> bool:
    return all(hasattr(layer, field) for field in _STATE_FIELDS)


def _hand_over_states(source: Any, target: Any) -> None:
    """Give a static cache layer the conv/SSM state tensors (and their flags) of a prefilled one."""
    for field in _STATE_FIELDS:
        setattr(target, field, dict(getattr(source, field)))
    target.device, target.dtype = source.device, source.dtype


def _static_layer_kinds() -> tuple[type, ...]:
    """StaticCache layer classes the decoder fills: full attention, Mamba state, and their union
    (the hybrids' layers; transformers 5.x names)."""
    from transformers import cache_utils

    names = ("StaticLayer", "LinearAttentionLayer", "LinearAttentionAndStaticFullAttentionLayer")
    return tuple(getattr(cache_utils, name) for name in names if hasattr(cache_utils, name))


def static_cache_supported(module: torch.nn.Module) -> bool:
    """transformers models with attention whose StaticCache layers are all full attention, Mamba
    state, or both (hybrids), with an sdpa, eager or sdpa-gqa attention backend. Sliding-window layers and
    attention-free models (no key/value layer to make static) are not."""
    from transformers import StaticCache

    config: Any = module.config
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager", ATTENTION_NAME):
        return False
    if not {"past_key_values", "cache"} & set(inspect.signature(module.forward).parameters):
        return False
    try:
        probe = StaticCache(config=config, max_cache_len=1)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    kinds = _static_layer_kinds()
    layers = list(probe.layers)
    return all(type(layer) in kinds for layer in layers) and any(map(_is_attention_layer, layers))


# ---------------------------------------------------------------------------------------------
# Native mamba_ssm


def native_prefill(module: torch.nn.Module, ids: torch.Tensor, mode: LogitsMode) -> PrefillOutput:
    from mamba_ssm.utils.generation import InferenceParams

    params = InferenceParams(max_seqlen=ids.shape[1] + 1, max_batch_size=1)
    output = module(ids, inference_params=params, num_last_tokens=keep_count(mode))
    return PrefillOutput(output.logits, params)


class NativeCompiledDecoder(GraphedDecoder):
    """mamba_ssm's step compiled by torch.compile (inductor fuses the elementwise work around its
    conv, scan and norm kernels) and captured in a CUDA graph by the decoder itself.

    The prefill fills an InferenceParams; its offset then stays at the prompt length, since mamba_ssm's
    Mamba layers only ask whether it is past 0 and a model without attention layers uses no positions,
    so the compiled step has one set of inputs and never recompiles. The conv and SSM states are
    updated in place; a copy of the prompt's is kept so that a rewind restores them. `graph` is None
    when neither compile nor capture worked; `note` then says why."""

    def __init__(
        self,
        module: torch.nn.Module,
        ids: torch.Tensor,
        window: int,
        *,
        one_row: bool = True,
        combo: bool = True,
    ) -> None:
        from mamba_ssm.utils.generation import InferenceParams

        config: Any = getattr(module, "config", None)
        if getattr(config, "attn_layer_idx", None):
            raise ValueError("the step keeps its offset fixed, which a model with attention layers cannot")
        self.model = module
        self.module = self._plain_step  # what is compiled, and the eager step the replay is checked against
        self.window = window
        self.prompt_len = ids.shape[1]
        self.params = InferenceParams(max_seqlen=self.prompt_len + window, max_batch_size=1)
        output = module(ids, inference_params=self.params, num_last_tokens=1)
        self.params.seqlen_offset = self.prompt_len
        self.states = [t for pair in self.params.key_value_memory_dict.values() for t in pair]
        self.prompt_states = [t.clone() for t in self.states]
        self.last_logits = output.logits
        self.token = output.logits[:, -1:].argmax(-1)
        self.prompt_token = self.token.clone()
        self.used = 0
        self._init_graph(one_row, combo)
        self.path = "mamba_ssm_eager"
        problems = self._capture_first_good([("compiled_cuda_graph_mamba_ssm", self._compiled_forward)])
        if problems:
            self.note = "; ".join(problems)

    def _plain_step(self, token: torch.Tensor, params: Any) -> torch.Tensor:
        """`MambaLMHeadModel.forward` for one token, less the namedtuple it builds on every call
        (which dynamo would break the graph at)."""
        model: Any = self.model
        return model.lm_head(model.backbone(token, inference_params=params))

    def _forward(self, forward: Callable[..., Any] | None = None) -> None:
        logits = (forward or self._step_forward)(self.token, self.params)
        self.last_logits = logits
        self.token.copy_(logits[:, -1:].argmax(-1))

    def rewind(self) -> None:
        for state, saved in zip(self.states, self.prompt_states, strict=True):
            state.copy_(saved)
        self.token.copy_(self.prompt_token)
        self.used = 0

    def state(self) -> Any:
        return self.params


class NativeDecoder:
    """mamba_ssm's step path, with its own CUDA-graph cache when on a GPU."""

    def __init__(self, module: torch.nn.Module, ids: torch.Tensor, window: int, *, graph: bool) -> None:
        from mamba_ssm.utils.generation import InferenceParams, update_graph_cache

        self.module = module
        self.window = window
        self.prompt_len = ids.shape[1]
        capacity = self.prompt_len + window
        self.run: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None
        self.note: str | None = None
        if graph:
            cache = update_graph_cache(module, None, 1, self.prompt_len, capacity)
            self.params = cache.inference_params
            self.params.reset(capacity, 1)
            self.run = cache.run
            self.path = "mamba_ssm_cuda_graph"
        else:
            self.params = InferenceParams(max_seqlen=capacity, max_batch_size=1)
            self.path = "mamba_ssm_eager"
        output = module(ids, inference_params=self.params, num_last_tokens=1)
        self.last_logits: torch.Tensor = output.logits
        self.token = output.logits[:, -1:].argmax(-1)
        self.position = torch.full((1, 1), self.prompt_len, dtype=torch.long, device=ids.device)
        self.rewind()

    def step(self) -> None:
        if self.params.seqlen_offset - self.prompt_len == self.window:
            self.rewind()
        offset = self.params.seqlen_offset
        self.position.fill_(offset)
        if self.run is not None:
            logits = self.run(self.token, self.position, offset)
        else:
            logits = self.module(
                self.token, position_ids=self.position, inference_params=self.params, num_last_tokens=1
            ).logits
        self.last_logits = logits
        self.token = logits[:, -1:].argmax(-1)
        self.params.seqlen_offset += 1

    def rewind(self) -> None:
        self.params.seqlen_offset = self.prompt_len

    def state(self) -> Any:
        return self.params


# ---------------------------------------------------------------------------------------------
# Dispatch on the runtime the zoo reports


def prefill(runtime: str, module: torch.nn.Module, ids: torch.Tensor, mode: LogitsMode) -> PrefillOutput:
    if runtime == "mamba_ssm":
        return native_prefill(module, ids, mode)
    return hf_prefill(module, ids, mode)


def faster_decoder(candidates: list[Any], blocks: int = CHOICE_BLOCKS, steps: int = CHOICE_STEPS) -> Any:
    """The candidate whose step is fastest here, timed: per candidate, one untimed step, then `blocks`
    blocks of `steps` steps (device-synchronized), the median block per step; every candidate is left
    rewound. The winner's `note` names each candidate's time, so the record says why it was chosen."""
    times: list[float] = []
    for decoder in candidates:
        timer = Timer(decoder.token.device)
        decoder.rewind()
        decoder.step()

        def block(decoder: Any = decoder) -> None:
            for _ in range(steps):
                decoder.step()

        per_step = sorted(timer.time_ns(block)[0] / steps for _ in range(blocks))
        times.append(per_step[len(per_step) // 2])
        decoder.rewind()
    best = candidates[times.index(min(times))]
    timings = ", ".join(f"{d.path} {ns / 1e6:.4g} ms" for d, ns in zip(candidates, times, strict=True))
    best.note = (
        f"{best.path} chosen as the faster step on this device ({timings} per step, median of {blocks} "
        f"blocks of {steps} steps)"
    )
    return best


def fastest_native_decoder(
    module: torch.nn.Module, ids: torch.Tensor, window: int, *, one_row: bool = True, combo: bool = True
) -> Decoder:
    """mamba_ssm's own graph, and its step compiled in the decoder's graph where that captures; of the
    two, the one whose step is faster on this device (compiling helps some architectures and slows
    others), with a note giving both times. Without the compiled step, a note says why."""
    own_graph = NativeDecoder(module, ids, window, graph=True)
    try:
        compiled = NativeCompiledDecoder(module, ids, window, one_row=one_row, combo=combo)
    except ValueError as exc:
        own_graph.note = f"compiled_cuda_graph_mamba_ssm not tried: {exc}; {own_graph.path} used"
        return own_graph
    if compiled.graph is None:
        why = compiled.note or "compiled_cuda_graph_mamba_ssm was not captured"
        own_graph.note = f"{why}; {own_graph.path} used"
        return own_graph
    best = faster_decoder([compiled, own_graph])
    # The loser holds a CUDA graph and its states; a compiled decoder refers to itself, so only a
    # collection frees it before the decode window is measured.
    del compiled, own_graph
    gc.collect()
    return best


def make_decoder(
    runtime: str,
    module: torch.nn.Module,
    ids: torch.Tensor,
    window: int,
    preference: DecodePreference,
    *,
    one_row: bool = True,
    combo: bool = True,
) -> Decoder:
    """The fastest decode path the runtime and device allow, the uncompiled graph, or eager; a
    compiled step takes its one-row products as reductions unless `one_row` is False, and combines
    independent kernels into shared launches unless `combo` is False."""
    on_gpu = ids.device.type == "cuda"
    fast = preference != "eager"
    if runtime == "mamba_ssm":
        if preference == "auto" and on_gpu:
            return fastest_native_decoder(module, ids, window, one_row=one_row, combo=combo)
        return NativeDecoder(module, ids, window, graph=fast and on_gpu)
    if fast and static_cache_supported(module):
        return HFStaticDecoder(
            module,
            ids,
            window,
            graph=on_gpu,
            compile_step=preference == "auto",
            one_row=one_row,
            combo=combo,
        )
    return HFEagerDecoder(module, ids, window)
