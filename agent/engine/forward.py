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
  checked against an eager step like the static cache's; attention-free models only. Where the GPU
  has programmatic dependent launch it is captured with it and without it;
- `mamba_ssm_cuda_graph`: mamba_ssm's own graph cache (`update_graph_cache`) of its uncompiled step.
  `auto` times it against the compiled steps and keeps the fastest (on an H200 compiling made
  Mamba-2's step faster and Mamba-1's slower; on an H100 dependent launch made Mamba-2's compiled
  step slower), or falls back to it, with a note, when the compiled step fails;
- `mamba_ssm_eager`: mamba_ssm's step path without graphs;
- `eager_dynamic_cache`: transformers' default cache, one Python forward per token.
"""

from __future__ import annotations

import torch

from ctxscope.agent.engine.decoding import DecodePreference, Decoder, LogitsMode, PrefillOutput
from ctxscope.agent.engine.graphed import ENGINE_COMPILE, StepCompile
from ctxscope.agent.engine.hf_decode import (
    HFEagerDecoder,
    HFStaticDecoder,
    hf_prefill,
    static_cache_supported,
)
from ctxscope.agent.engine.native_decode import NativeDecoder, fastest_native_decoder, native_prefill


def prefill(runtime: str, module: torch.nn.Module, ids: torch.Tensor, mode: LogitsMode) -> PrefillOutput:
    if runtime == "mamba_ssm":
        return native_prefill(module, ids, mode)
    return hf_prefill(module, ids, mode)


def make_decoder(
    runtime: str,
    module: torch.nn.Module,
    ids: torch.Tensor,
    window: int,
    preference: DecodePreference,
    options: StepCompile = ENGINE_COMPILE,
) -> Decoder:
    """The fastest decode path the runtime and device allow, the uncompiled graph, or eager; a
    compiled step is compiled as `options` say."""
    on_gpu = ids.device.type == "cuda"
    fast = preference != "eager"
    if runtime == "mamba_ssm":
        if preference == "auto" and on_gpu:
            return fastest_native_decoder(module, ids, window, options)
        return NativeDecoder(module, ids, window, graph=fast and on_gpu)
    if fast and static_cache_supported(module):
        return HFStaticDecoder(
            module,
            ids,
            window,
            graph=on_gpu,
            compile_step=preference == "auto",
            options=options,
        )
    return HFEagerDecoder(module, ids, window)
