"""One point end to end: a loaded model at one context length, precision and logits mode.

Order per point: one untimed prefill for the memory split (never timed and measured in the same
pass), the TTFT loop, then the decode setup (its own peak memory) and the decode loop. A decode
that does not fit after a prefill that did is recorded in `details`; the point stays `ok` with
the prefill figures.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from ctxscope.agent.engine import attention, bandwidth, decoding, forward, graphops, memory
from ctxscope.agent.engine.attention import AttentionMode
from ctxscope.agent.engine.autotune import autotune_choices
from ctxscope.agent.engine.graphed import StepCompile
from ctxscope.agent.engine.loop import SAMPLE_WORDS, LoopPolicy, LoopResult, Timer, measure
from ctxscope.agent.engine.outcome import Measured, Phase, PhaseLoop
from ctxscope.agent.zoo.kernels import compiled_step_label
from ctxscope.shared.messages import Metric

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Test hooks, read by the child that runs a point or probe: die by SIGKILL at this context length,
# or raise an emulated out-of-memory error when the prefill's tensors exceed this many bytes.
KILL_AT_ENV = "CTXSCOPE_ENGINE_KILL_AT"
BYTE_BUDGET_ENV = "CTXSCOPE_ENGINE_BYTE_BUDGET"
# cached positions at which the attention backends are timed (on CPU only their correctness matters)
CALIBRATION_LENGTH = 4096
CPU_CALIBRATION_LENGTH = 64


class EmulatedOutOfMemory(MemoryError):
    """The prefill's tensors exceed the byte budget set in CTXSCOPE_ENGINE_BYTE_BUDGET."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load and how."""

    name: str
    precision: str
    device: str
    tiny: bool = False
    prefer_native: bool = True
    require_fast_kernels: bool = False
    attention: AttentionMode = "sdpa-gqa"
    decode_in_graph: bool = True  # decode runs from a CUDA graph: its attention backends are timed in one


@dataclass(frozen=True)
class PointSettings:
    context_len: int
    logits: decoding.LogitsMode = "last"
    decode_tokens: int = 32
    decode: decoding.DecodePreference = "auto"
    one_row_reductions: bool = True
    combo_kernels: bool = True
    dependent_launch: bool = True
    policy: LoopPolicy = field(default_factory=LoopPolicy)
    seed: int = 0
    min_window_ns: int = 0


class Session:
    """A model loaded through the zoo, with its measured weight bytes."""

    def __init__(self, choice: ModelChoice) -> None:
        from ctxscope.agent import zoo

        self.choice = choice
        self.device = torch.device(choice.device)
        spec = zoo.spec_for(choice.name, tiny=choice.tiny)
        self.dtype = DTYPES[choice.precision]
        before = memory.allocated(self.device)
        started = time.perf_counter()
        self.loaded = zoo.load_model(
            spec,
            device=self.device,
            dtype=self.dtype,
            prefer_native=choice.prefer_native,
            require_fast_kernels=choice.require_fast_kernels,
            attn_implementation=attention.attn_implementation(choice.attention, spec.model_type),
        )
        self.load_s = time.perf_counter() - started
        after = memory.allocated(self.device)
        self.weights_bytes = None if before is None or after is None else after - before
        self.spec = self.loaded.spec
        self.module = self.loaded.module
        self.module.eval()
        # The vocabulary as the runtimes build it (padded, e.g. to a multiple of 8, for mamba_ssm):
        # the width of the logits and of the embedding that the random prompt indexes.
        self.vocab_size = int(zoo.hf_config(self.spec).vocab_size)
        self.cache_bytes_per_token = zoo.cache_bytes_per_token(self.spec, self.dtype)
        # transformers keeps SSM states in float32, mamba_ssm in the model dtype
        self.state_bytes = zoo.state_bytes(self.spec, self.dtype, runtime=self.loaded.runtime)
        self.attention_record: dict[str, str] = {"attention_mode": choice.attention}
        self.attention_trials: dict[str, str] = {}  # each backend's trial, for a result's details
        self._calibrate_attention()
        self.bandwidth = bandwidth.measure(self.device)  # before any cache exists; its buffers freed
        free(self.device)

    def _calibrate_attention(self) -> None:
        """With the sdpa-gqa path: pick its SDPA backends at this model's shape, and say which."""
        # native mamba_ssm models have no transformers attention setting (and no attention layers)
        if getattr(self.loaded.module.config, "_attn_implementation", None) != attention.ATTENTION_NAME:
            return
        shape = attention.model_shape(self.module)
        if shape is None:
            raise RuntimeError(
                f"{self.spec.name}: {attention.ATTENTION_NAME} set but no attention layer found"
            )
        length = CALIBRATION_LENGTH if self.device.type == "cuda" else CPU_CALIBRATION_LENGTH
        choice = attention.calibrate(
            shape, self.dtype, self.device, length=length, decode_in_graph=self.choice.decode_in_graph
        )
        self.attention_record.update(choice.record())
        self.attention_trials = choice.trials_detail()

    @property
    def runtime(self) -> str:
        return self.loaded.runtime

    def implementation(self) -> dict[str, str]:
        return {"runtime": self.loaded.runtime, **self.loaded.implementation, **self.attention_record}


def _check_hooks(context_len: int, footprint_bytes: int) -> None:
    if os.environ.get(KILL_AT_ENV) == str(context_len):
        os.kill(os.getpid(), signal.SIGKILL)
    budget = os.environ.get(BYTE_BUDGET_ENV)
    if budget is not None and footprint_bytes > int(budget):
        raise EmulatedOutOfMemory(
            f"emulated out of memory: {footprint_bytes} B of weights, cache and logits > budget {budget} B"
        )


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def prefill_memory(session: Session, ids: torch.Tensor, mode: decoding.LogitsMode) -> memory.MemorySplit:
    """One untimed prefill: its peak, cache and logits sizes. Applies the test hooks."""
    memory.reset_peak(session.device)
    out = forward.prefill(session.runtime, session.module, ids, mode)
    split = memory.MemorySplit(
        weights_bytes=session.weights_bytes,
        cache_bytes=memory.cache_bytes(out.cache),
        logits_bytes=out.logits.numel() * out.logits.element_size(),
        peak_bytes=memory.peak(session.device),
        logits_dtype=out.logits.dtype,
    )
    del out
    _check_hooks(ids.shape[1], session.loaded.weight_bytes + split.cache_bytes + split.logits_bytes)
    return split


def _metric_ms(result: LoopResult, method: str) -> Metric:
    """The loop's samples in ms; a loop that kept fewer than `min_reps` samples says so in the method."""
    note = f"; {result.shortfall}" if result.shortfall else ""
    return Metric(unit="ms", method=method + note, samples=[s / 1e6 for s in result.samples_ns])


def _loop(phase: Phase, result: LoopResult) -> PhaseLoop:
    return PhaseLoop(phase=phase, stop_reason=result.stop_reason, inner=result.inner, windows=result.windows)


def measure_point(session: Session, settings: PointSettings) -> Measured:
    """Measure one point; raises on out-of-memory or faults (the caller classifies them)."""
    device = session.device
    timer = Timer(device)
    ids = decoding.synthetic_prompt(
        session.vocab_size, settings.context_len, seed=settings.seed, device=device
    )
    outcome = Measured(implementation=session.implementation())
    outcome.implementation["prefill"] = f"{session.runtime} forward, logits={settings.logits}"
    if session.attention_trials:
        outcome.details["attention_trials"] = dict(session.attention_trials)
    if session.loaded.notes:  # e.g. why native mamba_ssm was not used: a fallback is never silent
        outcome.details["load_notes"] = list(session.loaded.notes)
    with torch.inference_mode():
        split = prefill_memory(session, ids, settings.logits)
        positions = 1 if settings.logits == "last" else settings.context_len
        outcome.metrics.update(memory.measured_metrics(split))
        outcome.metrics.update(
            memory.analytic_metrics(
                weight_bytes=session.loaded.weight_bytes,
                cache_bytes_per_token=session.cache_bytes_per_token,
                state_bytes=session.state_bytes,
                context_len=settings.context_len,
                logits_positions=positions,
                vocab_size=session.vocab_size,
                logits_dtype=split.logits_dtype,
            )
        )
        free(device)

        ttft = measure(
            lambda: forward.prefill(session.runtime, session.module, ids, settings.logits),
            name="prefill",
            tokens_per_run=settings.context_len,
            timer=timer,
            policy=settings.policy,
            min_window_ns=settings.min_window_ns,
        )
        outcome.loops.append(_loop("prefill", ttft))
        sample = ttft.sample_phrase(*SAMPLE_WORDS["ttft"])
        outcome.metrics["ttft"] = _metric_ms(
            ttft, f"{timer.method}; {sample} of {settings.context_len} random tokens, batch 1"
        )
        free(device)

        if settings.decode_tokens > 0:
            _measure_decode(session, settings, ids, timer, outcome)
    tuned = autotune_choices()
    if tuned:  # the Triton configs this point's kernels ran with (chosen by timing, per process)
        outcome.details["triton_autotune"] = tuned
    return outcome


def _floor_metrics(session: Session, context_len: int, result: LoopResult) -> dict[str, Metric]:
    """What a decode step must read, the time that takes at the measured bandwidth, and the fraction
    of that floor each decode sample reached."""
    read = bandwidth.decode_bytes_per_token(
        session.loaded.weight_bytes, session.cache_bytes_per_token, session.state_bytes, context_len
    )
    floor_ms = read / session.bandwidth.bytes_per_s * 1e3
    return {
        "decode_bytes_per_token": Metric(
            unit="B",
            method="analytic: weights + KV cache bytes/token x context + recurrent state (zoo), each "
            "read once per token",
            samples=[float(read)],
        ),
        "memory_bandwidth": Metric(
            unit="B/s", method=session.bandwidth.method, samples=[session.bandwidth.bytes_per_s]
        ),
        "decode_floor": Metric(
            unit="ms",
            method="decode_bytes_per_token / memory_bandwidth: one token at the bandwidth bound",
            samples=[floor_ms],
        ),
        "decode_floor_fraction": Metric(
            unit="ratio",
            method="decode_floor / decode_per_token, one per decode sample (1 = at the floor)",
            samples=[floor_ms / (s / 1e6) for s in result.samples_ns],
        ),
    }


def record_decode_path(outcome: Measured, decoder: decoding.Decoder) -> None:
    """What the decoder made of the step: its path, and for a compiled step its graph breaks, one-row
    products, combo kernels, dependent launch and kernel packages' operations (the last correcting
    `ssm_step`, which the eager probe observed)."""
    outcome.implementation["decode_path"] = decoder.path
    graph_breaks = getattr(decoder, "graph_breaks", None)
    if graph_breaks is not None:
        outcome.implementation["decode_graph_breaks"] = str(graph_breaks)
    one_row = getattr(decoder, "one_row_path", None)
    if one_row is not None:  # the path in the series key; the count, which a cache hit lacks, apart
        outcome.implementation["decode_one_row_products"] = one_row
        count = getattr(decoder, "one_row_products", None)
        if count is not None:
            outcome.details["decode_one_row_note"] = count
    combo = getattr(decoder, "combo_path", None)
    if combo is not None:
        outcome.implementation["decode_combo_kernels"] = combo
    pdl = getattr(decoder, "pdl_path", None)
    if pdl is not None:
        outcome.implementation["decode_dependent_launch"] = pdl
    package_ops = getattr(decoder, "package_ops", None)
    if package_ops is not None:  # a compiled step: what its graph holds, not the eager probe's path
        outcome.details["decode_package_ops"] = package_ops
        # with a graph break, code between the graphs ran eagerly: the census saw only the graphs
        whole = graph_breaks == 0
        if whole and isinstance(package_ops, dict) and "ssm_step" in outcome.implementation:
            outcome.implementation["ssm_step"] = compiled_step_label(
                outcome.implementation["ssm_step"], graphops.packages(package_ops)
            )
    note = getattr(decoder, "note", None)
    if note:
        outcome.details["decode_note"] = note[:2000]


def _measure_decode(
    session: Session,
    settings: PointSettings,
    ids: torch.Tensor,
    timer: Timer,
    outcome: Measured,
) -> None:
    device = session.device
    memory.reset_peak(device)
    decoder: decoding.Decoder | None = None
    try:
        decoder = forward.make_decoder(
            session.runtime,
            session.module,
            ids,
            settings.decode_tokens,
            settings.decode,
            options=StepCompile(
                settings.one_row_reductions, settings.combo_kernels, settings.dependent_launch
            ),
        )
        setup_peak = memory.peak(device)
        record_decode_path(outcome, decoder)
        # a dynamic cache still allocates while stepping: out of memory can strike in the loop too
        result = measure(
            decoder.step,
            name="decode",
            tokens_per_run=1,
            timer=timer,
            policy=settings.policy,
            inner=settings.decode_tokens,
            min_window_ns=settings.min_window_ns,
            prepare=decoder.rewind,
        )
    except torch.cuda.OutOfMemoryError as exc:
        oom: str | None = _short(exc)
    else:
        oom = None
    if oom is not None:  # freed after the except block, whose traceback still holds the decoder
        outcome.details["decode_outcome"] = "oom"
        outcome.details["decode_error"] = oom
        decoder = None
        free(device)
        return
    assert decoder is not None
    outcome.loops.append(_loop("decode", result))
    outcome.metrics["decode_per_token"] = _metric_ms(
        result,
        f"{timer.method}; {decoder.path}; "
        f"{result.sample_phrase(*SAMPLE_WORDS['decode_per_token'])} at context "
        f"{settings.context_len} (rewound every {decoder.window}), per token",
    )
    outcome.metrics.update(_floor_metrics(session, settings.context_len, result))
    outcome.metrics["memory_decode_state"] = Metric(
        unit="B",
        method="storage bytes of the floating-point decode cache/state tensors (integer counters left out)",
        samples=[float(memory.cache_bytes(decoder.state()))],
    )
    if setup_peak is not None:
        outcome.metrics["memory_decode_peak"] = Metric(
            unit="B",
            method="torch.cuda.max_memory_allocated over decode setup (prefill + cache + graph)",
            samples=[float(setup_peak)],
        )
    outcome.details["decode_outcome"] = "ok"
    del decoder
    free(device)


def _short(exc: BaseException, limit: int = 2000) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(exc: BaseException) -> Literal["oom", "fault"]:
    """Outcome of an exception raised by a point or probe: `oom` by type, anything else `fault`."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, EmulatedOutOfMemory)):
        return "oom"
    return "fault"


def error_text(exc: BaseException) -> str:
    return _short(exc)
