"""The kernel classifier: rule order, scope reassignment, shares that sum to 100%, nothing dropped."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest

from ctxscope.agent.profiling.classify import DeviceEvent, KernelClassifier, operator_shares

# Kernel names as CUPTI reports them (mamba_ssm, causal-conv1d, PyTorch, cuBLAS, Triton).
NAMED = {
    "void selective_scan_fwd_kernel<Selective_Scan_fwd_kernel_traits<32, 4, true, true, true, false, false, "
    "c10::BFloat16, float, c10::BFloat16> >(SSMParamsBase)": "ssm_scan",
    "_chunk_scan_fwd_kernel": "ssm_scan",
    "_chunk_state_fwd_kernel": "ssm_scan",
    "_state_passing_fwd_kernel": "ssm_scan",
    "_bmm_chunk_fwd_kernel": "ssm_scan",
    "_chunk_cumsum_fwd_kernel": "ssm_scan",
    "_selective_scan_update_kernel": "ssm_scan",
    "void causal_conv1d_fwd_kernel<Causal_conv1d_fwd_kernel_traits<128, 4, true, c10::BFloat16, "
    "c10::BFloat16> >(ConvParamsBase)": "conv1d",
    "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, "
    "cutlass::bfloat16_t, Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, true, false, "
    "false, true, true, false, false>(pytorch_flash::Flash_fwd_params)": "attention",
    "fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t, "
    "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)": "attention",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__"
    "5x_cublas": "gemm",
    "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT": "gemm",
    "_layer_norm_fwd_1pass_kernel": "norm",
    "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>, "
    "std::array<char*, 3ul> >(int, at::native::CUDAFunctor_add<c10::BFloat16>, "
    "std::array<char*, 3ul>)": "elementwise",
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, "
    "float, float, float>, unsigned int, float, 4, 4> >(at::native::ReduceOp<float, "
    "at::native::MeanOps<float, float, float, float>, unsigned int, float, 4, 4>)": "elementwise",
    "Memcpy HtoD (Pageable -> Device)": "memcpy_memset",
    "Memset (Device)": "memcpy_memset",
    "aten::addmm": "gemm",
    "aten::native_layer_norm": "norm",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
}


@pytest.fixture(scope="module")
def classifier() -> KernelClassifier:
    return KernelClassifier.default()


@pytest.mark.parametrize(("name", "expected"), sorted(NAMED.items()))
def test_kernel_names_map_to_their_class(classifier: KernelClassifier, name: str, expected: str) -> None:
    assert classifier.classify(name) == expected


def test_first_matching_rule_wins(classifier: KernelClassifier) -> None:
    # FlashAttention's name carries "cutlass" (a gemm pattern); attention comes first in the table.
    flash = next(n for n, c in NAMED.items() if c == "attention" and "flash_fwd" in n)
    assert "cutlass" in flash
    assert classifier.by_name(flash) == "attention"


def test_scopes_reassign_only_the_classes_they_override(classifier: KernelClassifier) -> None:
    gemm = "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT"
    add = next(n for n, c in NAMED.items() if "CUDAFunctor_add" in n)
    lm_head = ("ctxscope::pass::prefill#0", "ctxscope::module::lm_head")
    assert classifier.classify(gemm, lm_head) == "lm_head"
    assert classifier.classify(add, ("ctxscope::module::norm",)) == "norm"
    # a norm module's own GEMM would stay a GEMM; attention under the LM head stays attention
    assert classifier.classify(gemm, ("ctxscope::module::norm",)) == "gemm"
    assert classifier.classify("_chunk_scan_fwd_kernel", lm_head) == "ssm_scan"
    assert classifier.classify("aten::bmm", ("aten::_scaled_dot_product_attention_math",)) == "attention"


def test_shares_sum_to_100_and_unmatched_names_are_listed(classifier: KernelClassifier) -> None:
    events = [
        DeviceEvent("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", 0, 600),
        DeviceEvent("_chunk_scan_fwd_kernel", 600, 300),
        DeviceEvent("some_vendor_kernel_v2", 900, 70),
        DeviceEvent("some_vendor_kernel_v2", 970, 20),
        DeviceEvent("another_unknown", 990, 10),
        DeviceEvent("nvjet_tst_64x8_64x16_4x1_v_bz_TNN", 1000, 50, scopes=("ctxscope::module::lm_head",)),
    ]
    shares = operator_shares(events, classifier)
    assert shares.total_ns == 1050
    assert sum(c.share_pct for c in shares.classes) == pytest.approx(100.0)
    assert shares.share("gemm") == pytest.approx(100 * 600 / 1050)
    assert shares.share("lm_head") == pytest.approx(100 * 50 / 1050)
    assert shares.time_ns("other") == 100
    assert [(u.name, u.time_ns, u.count) for u in shares.unclassified] == [
        ("some_vendor_kernel_v2", 90, 2),
        ("another_unknown", 10, 1),
    ]
    details = shares.to_details()
    assert details["classes"]["other"]["kernels"] == 3
    assert details["unclassified"][0]["time_ms"] == pytest.approx(90e-6)


def test_a_rule_naming_an_undescribed_class_is_rejected() -> None:
    text = resources.files("ctxscope.agent.profiling").joinpath("kernel_classes.json").read_text()
    table = copy.deepcopy(json.loads(text))
    table["rules"].append({"class": "scan", "regex": "scan"})
    with pytest.raises(ValueError, match="scan"):
        KernelClassifier(table)
