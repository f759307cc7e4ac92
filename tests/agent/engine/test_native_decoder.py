"""The compiled mamba_ssm decoder's bookkeeping, on a stand-in for mamba_ssm (which needs CUDA to
install): rewinds restore the recurrent state, a failed compile or capture falls back to mamba_ssm's
own graph with a note, and models with attention layers are not compiled."""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import torch

from ctxscope.agent.engine import native_decode
from ctxscope.agent.engine.graphed import StepCompile

VOCAB, WIDTH = 11, 6


@dataclass
class InferenceParams:
    """mamba_ssm.utils.generation.InferenceParams, the fields the decoders use."""

    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    key_value_memory_dict: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def reset(self, max_seqlen: int, max_batch_size: int) -> None:
        self.max_seqlen, self.max_batch_size, self.seqlen_offset = max_seqlen, max_batch_size, 0


class Backbone(torch.nn.Module):
    """One recurrent layer: its state accumulates the embedding of every token it reads, in place."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, WIDTH)

    def forward(self, ids: torch.Tensor, inference_params: InferenceParams) -> torch.Tensor:
        cache = inference_params.key_value_memory_dict
        if 0 not in cache:
            cache[0] = (torch.zeros(1, WIDTH), torch.zeros(1, WIDTH))
        conv, ssm = cache[0]
        for position in range(ids.shape[1]):
            ssm.mul_(0.5).add_(self.embedding(ids[:, position]))
            conv.copy_(torch.tanh(ssm))
        return (ssm + conv).unsqueeze(1)


class StandInMamba(torch.nn.Module):
    """The shape of a MambaLMHeadModel: backbone, lm_head, forward(ids, inference_params, ...)."""

    def __init__(self, attention_layers: list[int] | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = Backbone()
        self.lm_head = torch.nn.Linear(WIDTH, VOCAB, bias=False)
        self.config = types.SimpleNamespace(attn_layer_idx=attention_layers or [])

    def forward(
        self,
        ids: torch.Tensor,
        position_ids: Any = None,
        inference_params: Any = None,
        num_last_tokens: int = 0,
    ) -> Any:
        logits = self.lm_head(self.backbone(ids, inference_params))
        return types.SimpleNamespace(logits=logits)


@pytest.fixture(autouse=True)
def _stand_in_mamba_ssm(monkeypatch: pytest.MonkeyPatch) -> None:
    generation = types.ModuleType("mamba_ssm.utils.generation")

    def update_graph_cache(model: Any, cache: Any, batch: int, prompt: int, capacity: int) -> Any:
        params = InferenceParams(max_seqlen=capacity, max_batch_size=batch)

        def run(token: torch.Tensor, position: torch.Tensor, offset: int) -> torch.Tensor:
            return model(token, inference_params=params).logits

        return types.SimpleNamespace(inference_params=params, run=run)

    generation.InferenceParams = InferenceParams  # type: ignore[attr-defined]
    generation.update_graph_cache = update_graph_cache  # type: ignore[attr-defined]
    for name in ("mamba_ssm", "mamba_ssm.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mamba_ssm.utils.generation", generation)


def _prompt() -> torch.Tensor:
    return torch.tensor([[3, 1, 4, 1, 5]])


def _logits_of_steps(decoder: native_decode.NativeCompiledDecoder, steps: int) -> list[torch.Tensor]:
    out = []
    for _ in range(steps):
        decoder.step()
        out.append(decoder.last_logits.clone())
    return out


def test_steps_follow_a_full_recompute_and_a_rewind_restores_the_state() -> None:
    model = StandInMamba()
    with torch.inference_mode():
        decoder = native_decode.NativeCompiledDecoder(model, _prompt(), window=8)
        # on the CPU nothing can be captured: the decoder says so and steps eagerly
        assert (
            decoder.graph is None and decoder.note and "compiled_cuda_graph_mamba_ssm failed" in decoder.note
        )
        first = _logits_of_steps(decoder, 3)
        decoder.rewind()
        again = _logits_of_steps(decoder, 3)
        # the same tokens from scratch, without any state carried between calls
        tokens = _prompt()
        recomputed = []
        for _ in range(4):
            logits = model(tokens, inference_params=InferenceParams(64, 1)).logits[:, -1:]
            recomputed.append(logits)
            tokens = torch.cat([tokens, logits.argmax(-1)], dim=1)
    assert all(torch.allclose(a, b) for a, b in zip(first, again, strict=True))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(first, recomputed[1:], strict=True))


def test_a_window_rewinds_by_itself() -> None:
    with torch.inference_mode():
        decoder = native_decode.NativeCompiledDecoder(StandInMamba(), _prompt(), window=2)
        steps = _logits_of_steps(decoder, 4)
    assert torch.equal(steps[0], steps[2]) and torch.equal(steps[1], steps[3])
    assert not torch.equal(steps[0], steps[1])


def test_a_failed_compile_falls_back_to_mamba_ssms_graph_with_a_note() -> None:
    with torch.inference_mode():
        decoder = native_decode.fastest_native_decoder(StandInMamba(), _prompt(), window=4)
    assert decoder.path == "mamba_ssm_cuda_graph"
    note = getattr(decoder, "note", "")
    assert note.startswith("compiled_cuda_graph_mamba_ssm failed") and note.endswith(
        "mamba_ssm_cuda_graph used"
    )


def test_a_model_with_attention_layers_is_not_compiled() -> None:
    with torch.inference_mode():
        decoder = native_decode.fastest_native_decoder(
            StandInMamba(attention_layers=[1]), _prompt(), window=4
        )
    assert decoder.path == "mamba_ssm_cuda_graph"
    assert "not tried" in getattr(decoder, "note", "")


class Slowed:
    """A decoder whose step takes `delay_s` longer, under another path name."""

    def __init__(self, decoder: native_decode.NativeDecoder, path: str, delay_s: float) -> None:
        self.inner, self.path, self.delay_s = decoder, path, delay_s
        self.token = decoder.token
        self.note: str | None = None

    def step(self) -> None:
        time.sleep(self.delay_s)
        self.inner.step()

    def rewind(self) -> None:
        self.inner.rewind()


def test_the_timed_choice_keeps_the_faster_step_and_says_why() -> None:
    with torch.inference_mode():
        slow = Slowed(
            native_decode.NativeDecoder(StandInMamba(), _prompt(), 4, graph=False), "slow_path", 0.004
        )
        quick = Slowed(
            native_decode.NativeDecoder(StandInMamba(), _prompt(), 4, graph=False), "quick_path", 0.0
        )
        for order in ([slow, quick], [quick, slow]):
            quick.note = slow.note = None
            best = native_decode.faster_decoder(order, blocks=3, steps=4)
            assert best is quick
            assert best.note is not None and best.note.startswith("quick_path chosen as the faster step")
            assert "slow_path " in best.note and "median of 3 blocks of 4 steps" in best.note
        # what the winner's own note said (a compile attempt that failed) stays in front
        quick.note = "quick_path with dependent launch failed: RuntimeError"
        best = native_decode.faster_decoder([slow, quick], blocks=3, steps=4)
        assert best.note is not None
        assert best.note.startswith(
            "quick_path with dependent launch failed: RuntimeError; quick_path chosen"
        )
    assert slow.inner.params.seqlen_offset == slow.inner.prompt_len  # left rewound


class CapturedStandIn(native_decode.NativeDecoder):
    """A compiled decoder as a GPU with dependent launch makes it: captured, its launch mode recorded,
    each step `delay_s` long (with dependent launch `pdl_delay_s` instead)."""

    made: ClassVar[list[bool]] = []
    delay_s, pdl_delay_s = 0.0, 0.0

    def __init__(self, module: Any, ids: torch.Tensor, window: int, options: StepCompile) -> None:
        super().__init__(module, ids, window, graph=False)
        pdl = options.pdl
        CapturedStandIn.made.append(pdl)
        self.path = "compiled_cuda_graph_mamba_ssm"
        self.graph = object()
        self.pdl_path = native_decode.PDL_LABEL if pdl else "the plan's dependent_launch is false"
        self.step_delay_s = self.pdl_delay_s if pdl else self.delay_s

    def step(self) -> None:
        time.sleep(self.step_delay_s)
        super().step()


class SlowOwnGraph(native_decode.NativeDecoder):
    """mamba_ssm's own graph, slower than either compiled step."""

    def step(self) -> None:
        time.sleep(0.008)
        super().step()


@pytest.mark.parametrize(("pdl_delay_s", "delay_s", "expect_pdl"), [(0.004, 0.0, False), (0.0, 0.004, True)])
def test_a_compiled_step_with_dependent_launch_is_timed_against_the_same_step_without(
    monkeypatch: pytest.MonkeyPatch, pdl_delay_s: float, delay_s: float, expect_pdl: bool
) -> None:
    monkeypatch.setattr(native_decode, "NativeCompiledDecoder", CapturedStandIn)
    monkeypatch.setattr(native_decode, "NativeDecoder", SlowOwnGraph)
    monkeypatch.setattr(CapturedStandIn, "made", [])
    monkeypatch.setattr(CapturedStandIn, "pdl_delay_s", pdl_delay_s)
    monkeypatch.setattr(CapturedStandIn, "delay_s", delay_s)
    with torch.inference_mode():
        best = native_decode.fastest_native_decoder(StandInMamba(), _prompt(), window=4)
    assert CapturedStandIn.made == [True, False]
    assert best.path == "compiled_cuda_graph_mamba_ssm"
    note = best.note or ""
    assert "compiled_cuda_graph_mamba_ssm with dependent launch " in note
    assert "compiled_cuda_graph_mamba_ssm without dependent launch " in note
    assert "mamba_ssm_cuda_graph " in note
    if expect_pdl:
        assert best.pdl_path == native_decode.PDL_LABEL
        assert note.startswith("compiled_cuda_graph_mamba_ssm with dependent launch chosen")
    else:
        assert best.pdl_path == native_decode.PDL_SLOWER_LABEL
        assert note.startswith("compiled_cuda_graph_mamba_ssm without dependent launch chosen")


def test_a_step_without_dependent_launch_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_decode, "NativeCompiledDecoder", CapturedStandIn)
    monkeypatch.setattr(CapturedStandIn, "made", [])
    with torch.inference_mode():
        native_decode.fastest_native_decoder(StandInMamba(), _prompt(), 4, StepCompile(pdl=False))
    assert CapturedStandIn.made == [False]
