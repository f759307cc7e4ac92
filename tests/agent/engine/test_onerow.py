"""The decode step's one-row matrix products compiled as reductions, checked on the CPU's inductor."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ctxscope.agent.engine import onerow

# each test compiles into an inductor cache of its own (conftest)
pytestmark = pytest.mark.usefixtures("own_inductor_cache")


class Step(torch.nn.Module):
    """A decode step's shape in small: gate projection with bias, down projection, a wide head."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(64, 96)
        self.down = torch.nn.Linear(96, 64, bias=False)
        self.head = torch.nn.Linear(64, onerow.MAX_SIZE, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.down(torch.nn.functional.silu(self.up(x))))


class Mixer(torch.nn.Module):
    """A state-space mixer's batched products in small: per head, the token's projection times the
    state (one row) and the state times a column."""

    def __init__(self) -> None:
        super().__init__()
        self.state = torch.nn.Parameter(torch.randn(8, 16, 32))  # heads, head dim, state size

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        read = torch.bmm(x, self.state)  # (8, rows, 16) x (8, 16, 32)
        out = torch.bmm(self.state, c)  # (8, 16, 32) x (8, 32, columns)
        return torch.cat([read.flatten(), out.flatten()])


def compiled_step(rows: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The compiled step's output, the float32 eager output, and what the compile did."""
    torch.manual_seed(0)
    step = Step().to(torch.bfloat16)
    x = torch.randn(1, rows, 64, dtype=torch.bfloat16)
    before = onerow.tally()
    with torch.no_grad():
        out = torch.compile(step, dynamic=False, options=onerow.compile_options())(x)
        reference = step.float()(x.float())
    return out, reference, onerow.describe(before)


def test_one_row_products_below_the_limit_become_reductions_and_agree_with_float32() -> None:
    out, reference, said = compiled_step(rows=1)
    assert said == "2 one-row matrix products compiled as reductions"  # up and down, not the head
    assert out.dtype == torch.bfloat16
    # bf16 output rounding of logits of size ~1 is ~0.008; the products themselves sum in float32
    assert float((out.float() - reference).abs().max()) < 0.02


def test_products_of_several_rows_stay_matrix_products() -> None:
    out, reference, said = compiled_step(rows=4)
    assert said.startswith("none: no one-row matrix product")
    assert float((out.float() - reference).abs().max()) < 0.05


def test_a_graph_from_inductors_cache_is_said_to_be_so() -> None:
    compiled_step(rows=1)
    torch._dynamo.reset()
    _, _, said = compiled_step(rows=1)
    assert said.startswith("compiled from inductor's cache")


def test_batched_products_of_one_row_or_one_column_become_reductions() -> None:
    torch.manual_seed(0)
    mixer = Mixer().to(torch.bfloat16)
    x, c = torch.randn(8, 1, 16, dtype=torch.bfloat16), torch.randn(8, 32, 1, dtype=torch.bfloat16)
    before = onerow.tally()
    with torch.no_grad():
        out = torch.compile(mixer, dynamic=False, options=onerow.compile_options())(x, c)
        reference = mixer.float()(x.float(), c.float())
    assert onerow.describe(before) == "2 one-row matrix products compiled as reductions"
    assert out.dtype == torch.bfloat16
    assert float((out.float() - reference).abs().max()) < 0.05 * float(reference.abs().max())


def test_batched_products_of_several_rows_and_columns_stay_matrix_products() -> None:
    mixer = Mixer()
    before = onerow.tally()
    with torch.no_grad():
        torch.compile(mixer, dynamic=False, options=onerow.compile_options())(
            torch.randn(8, 2, 16), torch.randn(8, 32, 2)
        )
    assert onerow.describe(before).startswith("none: no one-row matrix product")


@pytest.mark.parametrize("one_row", [True, False])
def test_a_decoders_compiled_step_takes_the_pass_only_when_asked(one_row: bool) -> None:
    """The static-cache decoder's compiled step (as the engine compiles it) on a tiny transformers
    model: its projections' one-row products are rewritten with the pass and left alone without."""
    from ctxscope.agent.engine import decoding, graphed, hf_decode
    from ctxscope.agent.engine.point import ModelChoice, Session

    session = Session(ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True))
    ids = decoding.synthetic_prompt(session.vocab_size, 8, seed=0, device=session.device)
    with torch.inference_mode():
        decoder = hf_decode.HFStaticDecoder(
            session.module, ids, 2, graph=False, options=graphed.StepCompile(one_row=one_row)
        )
        before = onerow.tally()
        decoder._step_forward = decoder._compiled_forward()  # as the capture sets it
        decoder._forward()
    rewritten = onerow.tally()[0] - before[0]
    assert (rewritten > 0) == one_row


def _tiny_qwen() -> tuple[torch.nn.Module, torch.Tensor]:
    """A tiny random Qwen2.5 on the CPU, fp32, and an 8-token prompt for it."""
    from ctxscope.agent.engine import decoding
    from ctxscope.agent.engine.point import ModelChoice, Session

    session = Session(ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True))
    return session.module, decoding.synthetic_prompt(session.vocab_size, 8, seed=0, device=session.device)


def _compile_options_seen(monkeypatch: pytest.MonkeyPatch, option: str) -> list[bool]:
    """Whether each inductor compile from here on is given `option` (the list fills as they happen)."""
    from ctxscope.agent.engine import graphops

    seen: list[bool] = []
    backend = graphops.inductor_backend

    def spy(inductor_options: dict[str, Any]) -> object:
        seen.append(bool(inductor_options.get(option)))
        return backend(inductor_options)

    monkeypatch.setattr(graphops, "inductor_backend", spy)
    return seen


@pytest.mark.parametrize(
    ("combo", "in_torch", "asked"), [(True, True, True), (False, True, False), (True, False, False)]
)
def test_a_decoders_compiled_step_combines_kernels_only_when_asked(
    combo: bool, in_torch: bool, asked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compile gets inductor's combo_kernels option when the decoder is made with `combo` and this
    torch has the option, says which of the three it did, and the step so compiled gives the eager
    step's logits."""
    from ctxscope.agent.engine import graphed, hf_decode

    options = _compile_options_seen(monkeypatch, "combo_kernels")
    monkeypatch.setattr(graphed, "has_combo_kernels", lambda: in_torch)
    module, ids = _tiny_qwen()
    with torch.inference_mode():
        decoder = hf_decode.HFStaticDecoder(
            module, ids, 2, graph=False, options=graphed.StepCompile(combo=combo)
        )
        decoder._forward()
        eager = decoder.last_logits.clone()
        decoder.rewind()
        decoder._step_forward = decoder._compiled_forward()  # as the capture sets it
        decoder._forward()
    assert options == [asked]
    labels = {(True, True): graphed.COMBO_LABEL, (True, False): graphed.COMBO_MISSING_LABEL}
    assert decoder.combo_path == labels.get((combo, in_torch), graphed.COMBO_OFF_LABEL)
    assert float((decoder.last_logits - eager).abs().max()) < 1e-4


@pytest.mark.parametrize(
    ("pdl", "missing", "asked"), [(True, None, True), (False, None, False), (True, "no", False)]
)
def test_a_decoders_compiled_step_launches_dependently_only_when_asked_and_possible(
    pdl: bool, missing: str | None, asked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compile gets inductor's triton.enable_pdl when the decoder is made with `pdl` and the device
    and torch have it; the label says which of the three it did, with the reason when it could not."""
    from ctxscope.agent.engine import graphed, hf_decode

    options = _compile_options_seen(monkeypatch, "triton.enable_pdl")
    monkeypatch.setattr(graphed, "dependent_launch_missing", lambda device: missing)
    module, ids = _tiny_qwen()
    with torch.inference_mode():
        decoder = hf_decode.HFStaticDecoder(module, ids, 2, graph=False, options=graphed.StepCompile(pdl=pdl))
        decoder._compiled_forward()
    assert options == [asked]
    expected = {True: graphed.PDL_LABEL, False: graphed.PDL_OFF_LABEL}[pdl]
    if pdl and missing:
        expected = f"each kernel starts once the one before it has ended ({missing})"
    assert decoder.pdl_path == expected


def test_a_step_whose_dependent_launch_fails_is_compiled_again_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the compile (or the replay) with dependent launch fails, the same step is compiled without
    it before the uncompiled one is tried: the launch is lost, not the compiled step; the label and the
    problems say so."""
    from ctxscope.agent.engine import graphed, graphops, hf_decode

    asked: list[bool] = []
    backend = graphops.inductor_backend

    def failing_with_pdl(inductor_options: dict[str, Any]) -> object:
        pdl = bool(inductor_options.get("triton.enable_pdl"))
        asked.append(pdl)
        if not pdl:
            return backend(inductor_options)

        def refuse(module: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
            raise RuntimeError("gdc_wait is not supported by this Triton")

        return refuse

    monkeypatch.setattr(graphops, "inductor_backend", failing_with_pdl)
    monkeypatch.setattr(graphed, "dependent_launch_missing", lambda device: None)
    module, ids = _tiny_qwen()
    with torch.inference_mode():
        decoder = hf_decode.HFStaticDecoder(
            module, ids, 2, graph=False, options=graphed.StepCompile(pdl=True)
        )
        decoder._capture = decoder.warm_up  # type: ignore[method-assign]  # no CUDA graph on the CPU
        decoder._check_replay = lambda: None  # type: ignore[method-assign]
        problems = decoder._capture_first_good(decoder._compiled_attempts("compiled_cuda_graph_static_cache"))
    assert asked == [True, False]
    assert decoder.path == "compiled_cuda_graph_static_cache"
    assert decoder.pdl_path == graphed.PDL_FAILED_LABEL
    assert len(problems) == 1 and "gdc_wait is not supported" in problems[0]
    assert problems[0].startswith("compiled_cuda_graph_static_cache with dependent launch failed")


def test_dependent_launch_is_missing_off_cuda_and_below_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    """No programmatic dependent launch on a CPU or a GPU below compute capability 9.0 (a Jetson Orin
    is 8.7); on 9.0 it is there when this torch's inductor has the option."""
    from ctxscope.agent.engine import graphed

    assert "cpu" in str(graphed.dependent_launch_missing(torch.device("cpu")))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 7))
    assert "8.7" in str(graphed.dependent_launch_missing(torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    import torch._inductor.config as inductor_config

    has = hasattr(inductor_config.triton, "enable_pdl")
    assert (graphed.dependent_launch_missing(torch.device("cuda", 0)) is None) == has


class ConvUpdate(torch.nn.Module):
    """A Mamba-2 mixer's decode-step convolution in small, as transformers' reference
    `causal_conv1d_update` runs it: the cached window and the new token, convolved per channel (two
    output positions with no padding), the last position kept; the window is updated in place."""

    def __init__(self, channels: int, kernel: int, bias: bool, padding: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(channels, channels, kernel, groups=channels, bias=bias)
        self.padding = padding

    def forward(self, window: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([window, x], dim=-1)
        window.copy_(joined[:, :, -window.shape[-1] :])
        out = torch.nn.functional.conv1d(
            joined, self.conv.weight, self.conv.bias, padding=self.padding, groups=joined.shape[1]
        )
        return torch.nn.functional.silu(out)


@pytest.mark.parametrize(("bias", "padding"), [(True, 0), (False, 0), (True, 2)])
def test_a_depthwise_convolution_of_few_positions_becomes_a_multiply_sum(bias: bool, padding: int) -> None:
    torch.manual_seed(0)
    update = ConvUpdate(48, 4, bias, padding).to(torch.bfloat16)
    window, x = torch.randn(2, 48, 4, dtype=torch.bfloat16), torch.randn(2, 48, 1, dtype=torch.bfloat16)
    compiled_window, reference_window = window.clone(), window.float()
    before = onerow.tally()
    with torch.no_grad():
        out = torch.compile(update, dynamic=False, options=onerow.compile_options())(compiled_window, x)
        reference = update.float()(reference_window, x.float())
    assert onerow.describe(before) == "1 depthwise convolutions of few positions as multiply-sums"
    assert out.dtype == torch.bfloat16
    assert out.shape == reference.shape == (2, 48, 2 + 2 * padding)
    # summed in float32 and rounded once: within bf16 rounding of outputs of size ~1
    assert float((out.float() - reference).abs().max()) < 0.01
    assert torch.equal(compiled_window.float(), reference_window)


class Convolutions(torch.nn.Module):
    """Convolutions the rewrite leaves alone: too many output positions, stride 2, dilation 2, a dense
    one (one group), a depthwise one with two kernels per channel, and a two-dimensional one."""

    def __init__(self) -> None:
        super().__init__()
        self.long = torch.nn.Conv1d(8, 8, 4, groups=8)
        self.strided = torch.nn.Conv1d(8, 8, 4, stride=2, groups=8)
        self.dilated = torch.nn.Conv1d(8, 8, 2, dilation=2, groups=8)
        self.dense = torch.nn.Conv1d(8, 8, 4)
        self.doubled = torch.nn.Conv1d(8, 16, 4, groups=8)
        self.planar = torch.nn.Conv2d(8, 8, 4, groups=8)

    def forward(self, few: torch.Tensor, many: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        outs = [self.long(many), self.strided(few), self.dilated(few), self.dense(few), self.doubled(few)]
        return torch.cat([out.flatten() for out in [*outs, self.planar(square)]])


def test_convolutions_that_do_not_qualify_stay_convolutions() -> None:
    torch.manual_seed(0)
    convolutions = Convolutions()
    many_positions = onerow.MAX_CONV_POSITIONS + 4 - 1 + 1  # one output position more than the limit
    few, many, square = torch.randn(1, 8, 5), torch.randn(1, 8, many_positions), torch.randn(1, 8, 4, 4)
    before = onerow.tally()
    with torch.no_grad():
        out = torch.compile(convolutions, dynamic=False, options=onerow.compile_options())(few, many, square)
        reference = convolutions(few, many, square)
    assert onerow.describe(before).startswith("none: no one-row matrix product")
    assert float((out - reference).abs().max()) < 1e-5


def test_a_hybrids_compiled_step_rewrites_its_mixers_convolutions() -> None:
    """The static-cache decoder's compiled step of a tiny Falcon-H1 (transformers' reference conv update,
    causal_conv1d absent): one convolution per Mamba-2 layer rewritten, the logits the eager step's."""
    from ctxscope.agent.engine import decoding, hf_decode
    from ctxscope.agent.engine.point import ModelChoice, Session

    session = Session(ModelChoice(name="falcon-h1-0.5b", precision="fp32", device="cpu", tiny=True))
    torch.manual_seed(0)
    with torch.no_grad():  # the tiny model's kernels (std 0.02) and zero biases would hardly move the logits
        for name, parameter in session.module.named_parameters():
            if "conv1d" in name:
                parameter.copy_(torch.randn_like(parameter) * 0.5)
    ids = decoding.synthetic_prompt(session.vocab_size, 8, seed=0, device=session.device)
    with torch.inference_mode():
        decoder = hf_decode.HFStaticDecoder(session.module, ids, 2, graph=False)
        decoder._forward()
        eager = decoder.last_logits.clone()
        decoder.rewind()
        before = onerow.tally()
        decoder._step_forward = decoder._compiled_forward()  # as the capture sets it
        decoder._forward()
    layers = session.module.config.num_hidden_layers
    assert onerow.tally()[1] - before[1] == layers
    assert f", {layers} depthwise convolutions of few positions" in onerow.describe(before)
    assert float((decoder.last_logits - eager).abs().max()) < 1e-4 * float(eager.abs().max()) + 1e-6
