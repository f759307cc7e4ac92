"""The census of a compiled step's package operations, taken from the graph dynamo traced."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ctxscope.agent.engine import graphops, onerow
from ctxscope.agent.engine.outcome import Measured
from ctxscope.agent.engine.point import record_decode_path

# each test compiles into an inductor cache of its own (conftest)
pytestmark = pytest.mark.usefixtures("own_inductor_cache")


def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


# defined by a package whose operators' namespace is not its name, as causal_conv1d's are (`DaoAILab`)
_twice.__module__ = "ctxscope_test_kernels.functions"
twice = torch.library.custom_op("CtxscopeTestLab::twice", mutates_args=())(_twice)


@twice.register_fake
def _twice_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _step(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.conv1d(twice(x), weight, groups=4).sum(-1) @ torch.ones(4, 3)


def test_a_package_operator_is_counted_and_torchs_are_not() -> None:
    x, weight = torch.randn(1, 4, 8), torch.randn(4, 1, 3)
    before = graphops.tally()
    compiled = torch.compile(_step, dynamic=False, backend=graphops.inductor_backend({}))
    assert torch.allclose(compiled(x, weight), _step(x, weight), atol=1e-5)
    seen = graphops.seen_since(before)
    assert seen == {"CtxscopeTestLab::twice": 1}
    assert isinstance(seen, dict) and graphops.packages(seen) == {"ctxscope_test_kernels"}


def test_an_operator_without_a_python_definition_is_its_namespaces() -> None:
    triton_kernel = "mamba_ssm.ops.triton.layer_norm._layer_norm_fwd_1pass_kernel"
    operations = {"some_cpp_lib::update": 2, triton_kernel: 1}
    assert graphops.packages(operations) == {"some_cpp_lib", "mamba_ssm"}


def test_a_step_of_torch_operators_holds_no_package_operation() -> None:
    before = graphops.tally()
    backend = graphops.inductor_backend({})
    compiled = torch.compile(lambda x: torch.relu(x) + 1, dynamic=False, backend=backend)
    compiled(torch.randn(5))
    assert graphops.seen_since(before) == {}


def test_the_backend_hands_its_options_to_inductor() -> None:
    """The one-row pass, given as an option, runs: the backend compiles as torch.compile's inductor."""
    row, matrix = torch.randn(1, 64), torch.randn(64, 32)
    before = onerow.tally()
    backend = graphops.inductor_backend(onerow.compile_options())
    compiled = torch.compile(torch.mm, dynamic=False, backend=backend)
    assert torch.allclose(compiled(row, matrix), row @ matrix, atol=1e-4)
    assert onerow.tally()[0] > before[0]


def test_a_graph_the_census_cannot_read_still_compiles_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(node: torch.fx.Node, wrappers: object) -> str | None:
        raise KeyError("kernel_idx")

    monkeypatch.setattr(graphops, "operation_of", unreadable)
    x, weight = torch.randn(1, 4, 8), torch.randn(4, 1, 3)
    before = graphops.tally()
    compiled = torch.compile(_step, dynamic=False, backend=graphops.inductor_backend({}))
    assert torch.allclose(compiled(x, weight), _step(x, weight), atol=1e-5)
    assert graphops.seen_since(before) == "not read: KeyError: 'kernel_idx'"


EAGER_STEP = "mamba_ssm triton selective_state_update + causal_conv1d_update (transformers)"


def _compiled_decoder(package_ops: dict[str, int] | str, graph_breaks: int) -> SimpleNamespace:
    return SimpleNamespace(
        path="compiled_cuda_graph_static_cache", graph_breaks=graph_breaks, package_ops=package_ops
    )


@pytest.mark.parametrize(
    ("package_ops", "graph_breaks", "ssm_step"),
    [
        (
            {"mamba_ssm.ops.triton.selective_state_update._selective_scan_update_kernel": 36},
            0,
            "mamba_ssm triton selective_state_update + torch causal_conv1d_update (compiled by inductor)"
            " (transformers)",
        ),
        ({"mamba_ssm.ops.triton.selective_state_update._selective_scan_update_kernel": 36}, 2, EAGER_STEP),
        ("not read: KeyError: 'kernel_idx'", 0, EAGER_STEP),
    ],
)
def test_a_compiled_steps_record_names_what_its_graph_holds(
    package_ops: dict[str, int] | str, graph_breaks: int, ssm_step: str
) -> None:
    """The census corrects the eager probe's `ssm_step` only where it saw the whole step: no graph
    break (code between graphs ran eagerly, unseen) and a graph it could read."""
    outcome = Measured(implementation={"ssm_step": EAGER_STEP})
    record_decode_path(outcome, _compiled_decoder(package_ops, graph_breaks))  # type: ignore[arg-type]
    assert outcome.implementation["ssm_step"] == ssm_step
    assert outcome.details["decode_package_ops"] == package_ops
    assert outcome.implementation["decode_graph_breaks"] == str(graph_breaks)


def test_an_uncompiled_step_keeps_the_probes_label() -> None:
    outcome = Measured(implementation={"ssm_step": EAGER_STEP})
    record_decode_path(outcome, SimpleNamespace(path="cuda_graph_static_cache"))  # type: ignore[arg-type]
    assert outcome.implementation["ssm_step"] == EAGER_STEP
    assert "decode_package_ops" not in outcome.details
