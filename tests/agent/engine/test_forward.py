"""Forward adapters on tiny zoo models: decode paths agree with plain generation, sizes are right."""

from __future__ import annotations

import pytest
import torch

from ctxscope.agent import zoo
from ctxscope.agent.engine import decoding, forward, hf_decode, memory

CPU = torch.device("cpu")


def _loaded(name: str):
    return zoo.load_model(zoo.tiny_spec(name), device=CPU, dtype=torch.float32)


def _greedy_reference(module: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[int]:
    """Greedy tokens by re-running the whole sequence each step (no cache at all)."""
    tokens = ids
    out = []
    for _ in range(steps):
        logits = module(input_ids=tokens, use_cache=False).logits
        nxt = logits[:, -1:].argmax(-1)
        out.append(int(nxt))
        tokens = torch.cat([tokens, nxt], dim=1)
    return out


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("qwen2.5-0.5b", "eager_static_cache"),
        ("llama3.2-1b", "eager_static_cache"),
        ("falcon-h1-0.5b", "eager_static_cache"),
        ("zamba2-1.2b", "eager_static_cache"),
        ("mamba2-780m", "eager_dynamic_cache"),
    ],
)
def test_decoder_follows_greedy_generation(name: str, path: str) -> None:
    loaded = _loaded(name)
    ids = decoding.synthetic_prompt(int(loaded.spec.config["vocab_size"]), 24, seed=3, device=CPU)
    with torch.inference_mode():
        expected = _greedy_reference(loaded.module, ids, 4)
        decoder = forward.make_decoder(loaded.runtime, loaded.module, ids, window=8, preference="auto")
        assert decoder.path == path
        got = [int(decoder.token)]  # the prefill's own next token
        for _ in range(3):
            decoder.step()
            got.append(int(decoder.token))
    assert got == expected


def _static_decoder(name: str, window: int, seed: int) -> hf_decode.HFStaticDecoder:
    """A static-cache decoder (no graph) after a 16-token prompt of the tiny model; call it in
    inference mode, as the steps that follow."""
    loaded = _loaded(name)
    ids = decoding.synthetic_prompt(int(loaded.spec.config["vocab_size"]), 16, seed=seed, device=CPU)
    return hf_decode.HFStaticDecoder(loaded.module, ids, window=window, graph=False)


def test_static_decoder_rewinds_to_the_prompt() -> None:
    with torch.inference_mode():
        decoder = _static_decoder("qwen2.5-0.5b", window=3, seed=0)
        first = int(decoder.token)
        decoder.step()
        after_one = int(decoder.token)
        for _ in range(5):  # wraps past the window twice
            decoder.step()
        assert int(decoder.position) <= 16 + 3
        decoder.rewind()
        decoder.token.fill_(first)
        decoder.step()
    assert int(decoder.token) == after_one  # same context, same next token


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "falcon-h1-0.5b"])
def test_graph_warm_up_fits_a_one_position_window(name: str) -> None:
    """The profiler decodes with a window of one position; the warm-up before a CUDA graph capture
    takes two steps, each of which must start from the prompt (two steps in a row write past the cache,
    a device-side assert on a GPU, an index error here)."""
    with torch.inference_mode():
        decoder = _static_decoder(name, window=1, seed=2)
        first = int(decoder.token)
        decoder.step()
        after_one = int(decoder.token)
        decoder.warm_up()
        assert int(decoder.position) == 16 and int(decoder.token) == first
        decoder.step()
    assert int(decoder.token) == after_one


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "falcon-h1-0.5b", "zamba2-1.2b"])
def test_static_decoder_steps_in_place(name: str) -> None:
    """What a CUDA graph replays must stay where it was captured: no cache tensor of the static
    path (attention buffers, and the hybrids' conv and SSM states) is reallocated by a step."""
    with torch.inference_mode():
        decoder = _static_decoder(name, window=4, seed=1)
        before = {t.data_ptr() for t in memory.tensors_in(decoder.state())}
        states = [t.clone() for t in memory.tensors_in(decoder.state())]
        for _ in range(6):  # wraps past the window
            decoder.step()
        after = {t.data_ptr() for t in memory.tensors_in(decoder.state())}
        now = list(memory.tensors_in(decoder.state()))
    assert after == before
    assert any(not torch.equal(a, b) for a, b in zip(states, now, strict=True))  # the steps wrote there


def _steps(decoder: hf_decode.HFStaticDecoder, tokens: list[int]) -> list[torch.Tensor]:
    """Logits of steps fed the given tokens (teacher forcing)."""
    out = []
    for token in tokens:
        decoder.token.fill_(token)
        decoder.step()
        out.append(decoder.last_logits.clone())
    return out


def _fresh_steps_and_decoder(
    seed: int, tokens: list[int]
) -> tuple[list[torch.Tensor], hf_decode.HFStaticDecoder]:
    """On one Zamba2 prompt: the step logits of a fresh static decoder fed `tokens`, and a second
    static decoder, untouched, to compare with it."""
    loaded = _loaded("zamba2-1.2b")
    ids = decoding.synthetic_prompt(int(loaded.spec.config["vocab_size"]), 16, seed=seed, device=CPU)
    fresh = _steps(hf_decode.HFStaticDecoder(loaded.module, ids, window=4, graph=False), tokens)
    return fresh, hf_decode.HFStaticDecoder(loaded.module, ids, window=4, graph=False)


def _same_logits(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("restore", [True, False])
def test_static_decoder_rewind_restores_mamba_states(restore: bool) -> None:
    """Steps before a rewind (the GPU path's warm-up and capture steps) leave no trace in a hybrid's
    Mamba states: after the rewind the decoder steps exactly like a fresh one."""
    tokens = [5, 17, 3]
    with torch.inference_mode():
        fresh, decoder = _fresh_steps_and_decoder(2, tokens)
        assert decoder.states  # the hybrid's conv and SSM states are tracked
        if not restore:  # what a rewind of attention lengths alone would do
            decoder.prompt_states = decoder.states
        _steps(decoder, [9, 9, 9])
        decoder.rewind()
        again = _steps(decoder, tokens)
    assert _same_logits(fresh, again) is restore


class _FakeGraph:
    """Stands in for a CUDA graph on the CPU: its replay is the eager step, off by `error`."""

    def __init__(self, decoder: hf_decode.HFStaticDecoder, error: float) -> None:
        self.decoder, self.error = decoder, error

    def replay(self) -> None:
        self.decoder._forward()
        self.decoder.graph_logits = self.decoder.last_logits + self.error


@pytest.mark.parametrize("error", [0.0, 10.0])
def test_a_graph_replay_is_checked_against_an_eager_step(error: float) -> None:
    tokens = [7, 1, 12]
    with torch.inference_mode():
        fresh, decoder = _fresh_steps_and_decoder(4, tokens)
        decoder.graph = _FakeGraph(decoder, error)  # type: ignore[assignment]
        note = decoder._check_replay()
        decoder.graph = None
        after = _steps(decoder, tokens)
    assert (note is None) == (error == 0.0)
    assert note is None or "disagreed with an eager step" in note
    # the check leaves the decoder at the prompt: its steps are a fresh decoder's
    assert _same_logits(fresh, after)


@pytest.mark.parametrize(
    ("compiled_problem", "plain_error", "path", "in_note"),
    [
        (None, 0.0, "compiled_cuda_graph_static_cache", None),
        ("wrong", 0.0, "cuda_graph_static_cache", "compiled_cuda_graph_static_cache replay disagreed"),
        ("raises", 0.0, "cuda_graph_static_cache", "compiled_cuda_graph_static_cache failed: RuntimeError"),
        ("wrong", 10.0, "eager_static_cache", "cuda_graph_static_cache replay disagreed"),
    ],
)
def test_the_compiled_step_falls_back_to_the_plain_graph_then_eager_with_a_note(
    compiled_problem: str | None, plain_error: float, path: str, in_note: str | None
) -> None:
    """The capture order on a GPU, with the capture faked on the CPU: compiled step, plain step, eager."""
    tokens = [7, 1, 12]
    with torch.inference_mode():
        fresh, decoder = _fresh_steps_and_decoder(4, tokens)
        module = decoder.module

        def compiled() -> object:
            if compiled_problem == "raises":
                raise RuntimeError("no working triton installation")
            return lambda **kwargs: module(**kwargs)

        def capture() -> None:
            if decoder._step_forward is module:
                error = plain_error
            else:
                error = 10.0 if compiled_problem == "wrong" else 0.0
            decoder.graph = _FakeGraph(decoder, error)  # type: ignore[assignment]

        decoder._compiled_forward = compiled  # type: ignore[method-assign]
        decoder._capture = capture  # type: ignore[method-assign]
        decoder._capture_best(compile_step=True)
        assert decoder.path == path
        assert (decoder.note is None) == (in_note is None)
        assert in_note is None or (in_note in decoder.note and decoder.note.endswith(f"{path} used"))
        decoder.graph = None  # step eagerly from here: the fake graph only stands in for the capture
        decoder._step_forward = module
        after = _steps(decoder, tokens)
    assert _same_logits(fresh, after)


def test_static_cache_needs_attention_layers_of_supported_kinds() -> None:
    assert hf_decode.static_cache_supported(_loaded("falcon-h1-0.5b").module)
    assert hf_decode.static_cache_supported(_loaded("zamba2-1.2b").module)
    # attention-free: nothing to make static, transformers' own cache is used
    assert not hf_decode.static_cache_supported(_loaded("mamba2-780m").module)


def test_eager_decoder_keeps_the_context_bounded() -> None:
    loaded = _loaded("zamba2-1.2b")
    ids = decoding.synthetic_prompt(int(loaded.spec.config["vocab_size"]), 16, seed=0, device=CPU)
    with torch.inference_mode():
        decoder = hf_decode.HFEagerDecoder(loaded.module, ids, window=2)
        start = memory.tensor_bytes(decoder.state())
        for _ in range(7):
            decoder.step()
        grown = memory.tensor_bytes(decoder.state())
    # at most `window` positions beyond the prompt are ever held
    assert 0 < grown - start <= 2 * zoo.cache_bytes_per_token(loaded.spec, torch.float32)


def test_logits_modes_and_tensor_bytes() -> None:
    loaded = _loaded("mamba2-780m")
    ids = decoding.synthetic_prompt(int(loaded.spec.config["vocab_size"]), 20, seed=0, device=CPU)
    with torch.inference_mode():
        last = forward.prefill(loaded.runtime, loaded.module, ids, "last")
        every = forward.prefill(loaded.runtime, loaded.module, ids, "all")
    assert last.logits.shape[1] == 1 and every.logits.shape[1] == 20
    # the SSM state does not grow with the prompt and matches the zoo's analytic size
    assert memory.cache_bytes(last.cache) == zoo.state_bytes(loaded.spec, torch.float32)
    # what is left out is integer bookkeeping: a length counter per layer at most (transformers >= 5.25)
    bookkeeping = memory.tensor_bytes(last.cache) - memory.cache_bytes(last.cache)
    assert bookkeeping in (0, 8 * loaded.spec.config["n_layer"])


def test_tensor_bytes_counts_shared_storage_once() -> None:
    base = torch.zeros(10, 10)
    holder = {"a": base, "b": [base[:5], (base[5:],)], "c": torch.ones(3)}
    assert memory.tensor_bytes(holder) == 100 * 4 + 3 * 4
