"""Decode and prefill adapters for Hugging Face transformers modules: the default cache stepped one
Python forward per token, and a StaticCache filled from the prefill whose step is captured in a CUDA
graph (compiled first, `graphed.GraphedDecoder`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ctxscope.agent.engine.attention import ATTENTION_NAME
from ctxscope.agent.engine.decoding import LogitsMode, PrefillOutput, keep_count
from ctxscope.agent.engine.graphed import ENGINE_COMPILE, GraphedDecoder, StepCompile
from ctxscope.agent.zoo.hfcache import hf_cache, hf_cache_kwarg


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
        options: StepCompile = ENGINE_COMPILE,
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
        self._init_graph(options)
        self.rewind()
        self.path = "eager_static_cache"
        if graph:
            self._capture_best(compile_step)

    def _capture_best(self, compile_step: bool) -> None:
        """Capture the compiled step, else the plain one; each must pass the replay check."""
        attempts: list[tuple[str, Callable[[], Callable[..., Any]]]] = []
        if compile_step:
            attempts += self._compiled_attempts("compiled_cuda_graph_static_cache")
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
