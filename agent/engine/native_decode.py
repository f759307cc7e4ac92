"""Decode and prefill adapters for native mamba_ssm `MambaLMHeadModel`s: mamba_ssm's own step (with
its CUDA-graph cache on a GPU), its step compiled and captured by the decoder (`graphed`), and the
timed choice between the two."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from ctxscope.agent.engine.decoding import Decoder, LogitsMode, PrefillOutput, keep_count
from ctxscope.agent.engine.graphed import ENGINE_COMPILE, PDL_LABEL, GraphedDecoder, StepCompile
from ctxscope.agent.engine.loop import Timer

# A timed choice between decode paths: blocks of steps per candidate, the median block decides.
CHOICE_BLOCKS, CHOICE_STEPS = 3, 16
# Why the compiled step of a native model runs without programmatic dependent launch where the device
# has it (`implementation.decode_dependent_launch`): dependent launch speeds some steps and slows others.
# On one H100 at 16K, Mamba2-780m's compiled step took 1.598 ms with it and 1.558-1.563 ms without, in
# two pairs of fresh processes (results/engine/decode-tuning/h100/pdl-native/), so both are timed.
PDL_SLOWER_LABEL = (
    "each kernel starts once the one before it has ended (timed faster here than the same step with "
    "programmatic dependent launch)"
)


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
        options: StepCompile = ENGINE_COMPILE,
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
        self._init_graph(options)
        self.path = "mamba_ssm_eager"
        problems = self._capture_first_good(self._compiled_attempts("compiled_cuda_graph_mamba_ssm"))
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


def faster_decoder(candidates: list[Any], blocks: int = CHOICE_BLOCKS, steps: int = CHOICE_STEPS) -> Any:
    """The candidate whose step is fastest here, timed: per candidate, one untimed step, then `blocks`
    blocks of `steps` steps (device-synchronized), the median block per step; every candidate is left
    rewound. The winner's `note` names each candidate's time, so the record says why it was chosen
    (after what its own note said, e.g. a compile attempt that failed)."""
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
    timed = zip(candidates, times, strict=True)
    timings = ", ".join(f"{_choice_label(d)} {ns / 1e6:.4g} ms" for d, ns in timed)
    chosen = (
        f"{_choice_label(best)} chosen as the faster step on this device ({timings} per step, median of "
        f"{blocks} blocks of {steps} steps)"
    )
    best.note = f"{best.note}; {chosen}" if best.note else chosen
    return best


def _choice_label(decoder: Any) -> str:
    """A candidate's path, and for a compiled step whether it launches its kernels dependently."""
    pdl_path = getattr(decoder, "pdl_path", None)
    if pdl_path is None:
        return str(decoder.path)
    return f"{decoder.path} {'with' if pdl_path == PDL_LABEL else 'without'} dependent launch"


def fastest_native_decoder(
    module: torch.nn.Module,
    ids: torch.Tensor,
    window: int,
    options: StepCompile = ENGINE_COMPILE,
) -> Decoder:
    """mamba_ssm's own graph, and its step compiled in the decoder's graph where that captures (where it
    launches its kernels dependently, also the same step without that); of these, the one whose step is
    faster on this device (compiling, and dependent launch, help some architectures and slow others),
    with a note giving every time. Without the compiled step, a note says why."""
    own_graph = NativeDecoder(module, ids, window, graph=True)
    try:
        compiled = NativeCompiledDecoder(module, ids, window, options)
    except ValueError as exc:
        own_graph.note = f"compiled_cuda_graph_mamba_ssm not tried: {exc}; {own_graph.path} used"
        return own_graph
    if compiled.graph is None:
        why = compiled.note or "compiled_cuda_graph_mamba_ssm was not captured"
        own_graph.note = f"{why}; {own_graph.path} used"
        return own_graph
    candidates: list[Any] = [compiled, own_graph]
    if compiled.pdl_path == PDL_LABEL:
        independent = NativeCompiledDecoder(module, ids, window, replace(options, pdl=False))
        if independent.graph is not None:
            independent.pdl_path = PDL_SLOWER_LABEL  # the record's reason, should it be chosen
            candidates.insert(1, independent)
        else:
            why = f"the step without dependent launch: {independent.note or 'it was not captured'}"
            compiled.note = f"{compiled.note}; {why}" if compiled.note else why
        del independent
    best = faster_decoder(candidates)
    # The losers hold CUDA graphs and their states; a compiled decoder refers to itself, so only a
    # collection frees them before the decode window is measured.
    del compiled, own_graph, candidates
    gc.collect()
    return best
