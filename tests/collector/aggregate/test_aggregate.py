"""Aggregation against answers worked out by hand."""

from __future__ import annotations

import math

import pytest

from ctxscope.collector.aggregate.characterize import characterize, compare, memory_fits
from ctxscope.collector.aggregate.crossover import Crossing, crossings, crossovers
from ctxscope.collector.aggregate.fit import fit_quadratic
from ctxscope.collector.aggregate.maxctx import max_context
from ctxscope.collector.aggregate.points import aggregate_points
from ctxscope.collector.aggregate.stats import UnitMismatch, summarize
from ctxscope.collector.readmodel.figures import compare_figure
from ctxscope.shared.messages import Metric


def test_median_is_of_pooled_samples_not_of_run_medians(result_factory):
    # Run medians are 2 and 10 (their mean 6); the pooled median of 1,2,3,10,11 is 3.
    a = result_factory(run_id="r1", metrics={"ttft": ("ms", [1, 2, 3])})
    b = result_factory(run_id="r2", metrics={"ttft": ("ms", [10, 11])})
    (point,) = aggregate_points([a, b])
    summary = point.metrics["ttft"]
    assert summary.median == 3
    assert summary.n == 5
    assert (summary.minimum, summary.maximum) == (1, 11)
    assert (summary.p25, summary.p75) == (2, 10)
    assert point.runs == ["r1", "r2"]


def test_units_convert_before_pooling():
    s = summarize(
        [Metric(unit="s", method="m", samples=[0.001, 0.003]), Metric(unit="ms", method="m", samples=[2])]
    )
    assert s.unit == "ms"
    assert s.median == pytest.approx(2.0)
    with pytest.raises(UnitMismatch):
        summarize([Metric(unit="s", method="m", samples=[1]), Metric(unit="MiB", method="m", samples=[1])])


def test_failed_points_count_but_do_not_pool(result_factory):
    ok = result_factory(metrics={"ttft": ("ms", [5])})
    oom = result_factory(outcome="oom", metrics={"ttft": ("ms", [500])})
    (point,) = aggregate_points([ok, oom])
    assert point.metrics["ttft"].median == 5
    assert dict(point.outcomes) == {"ok": 1, "oom": 1}


def test_different_kernel_paths_never_pool(result_factory):
    native = result_factory(implementation={"scan": "mamba_ssm"}, metrics={"ttft": ("ms", [1])})
    fallback = result_factory(implementation={"scan": "torch"}, metrics={"ttft": ("ms", [9])})
    assert len(aggregate_points([native, fallback])) == 2


def test_runs_of_one_path_pool_though_older_agents_recorded_their_trial_times(result_factory):
    path = {"attention_backend_decode": "cudnn_attention", "decode_path": "compiled_cuda_graph_static_cache"}
    a = result_factory(
        run_id="r1",
        implementation={**path, "attention_trial_decode/cudnn_attention": "6.6 us, max |diff| 0.00026"},
        metrics={"ttft": ("ms", [1])},
    )
    b = result_factory(
        run_id="r2",
        implementation={**path, "attention_trial_decode/cudnn_attention": "6.7 us, max |diff| 0.00026"},
        metrics={"ttft": ("ms", [2])},
    )
    flash = result_factory(
        run_id="r3",
        implementation={**path, "attention_backend_decode": "flash_attention"},
        metrics={"ttft": ("ms", [3])},
    )
    pooled, other = aggregate_points([a, b, flash])
    assert pooled.runs == ["r1", "r2"] and pooled.metrics["ttft"].n == 2
    assert "attention_trial" not in pooled.key.implementation
    assert other.runs == ["r3"]


def test_max_context_and_first_failure(result_factory):
    rows = [result_factory(context_len=n) for n in (1024, 4096, 8192)]
    rows.append(result_factory(context_len=16384, outcome="oom"))
    rows.append(result_factory(context_len=32768, outcome="oom"))
    (entry,) = max_context(aggregate_points(rows))
    assert entry.max_ok_tokens == 8192
    assert entry.first_failure_tokens == 16384
    assert entry.failure_outcome == "oom"


def test_a_prefill_whose_decode_ran_out_of_memory_is_no_longest_ok(result_factory):
    decode_oom = {"decode_outcome": "oom", "decode_error": "CUDA out of memory"}
    rows = [result_factory(context_len=n, details={"decode_outcome": "ok"}) for n in (1024, 4096)]
    rows.append(result_factory(context_len=8192, details=decode_oom))
    rows.append(result_factory(context_len=16384, outcome="oom"))
    (entry,) = max_context(aggregate_points(rows))
    assert (entry.max_ok_tokens, entry.first_failure_tokens) == (4096, 8192)
    assert entry.failure_outcome == "decode oom"
    # one run of the length that ran both phases makes it ok; a plan without decode has no decode outcome
    rows.append(result_factory(context_len=8192, run_id="run-b"))
    (entry,) = max_context(aggregate_points(rows))
    assert (entry.max_ok_tokens, entry.first_failure_tokens, entry.failure_outcome) == (8192, 16384, "oom")


def test_crossing_interpolates_in_log_log():
    # Ratio 0.5 at 1024 and 2.0 at 4096: ln r goes -ln 2 -> +ln 2, so 0 is reached halfway in ln L: 2048.
    (c,) = crossings([1024, 4096], [0.5, 2.0])
    assert c.length_tokens == pytest.approx(2048)
    # 0.5 -> 4.0: ln r reaches 0 a third of the way: 1024 * 4^(1/3)
    assert crossings([1024, 4096], [0.5, 4.0])[0].length_tokens == pytest.approx(1024 * 4 ** (1 / 3))
    assert c.faster_above == "other"
    assert crossings([1024, 4096], [0.5, 0.9]) == []


def test_parity_counts_once_and_a_touch_is_no_crossing():
    assert crossings([1, 2, 4, 8], [0.8, 1.0, 1.0, 1.2]) == [Crossing(2, "other")]
    assert crossings([1, 2, 4], [0.8, 1.0, 0.8]) == []  # the transformer is still faster above
    assert crossings([1, 2, 4], [1.0, 1.2, 1.3]) == []  # tied at the shortest length: nothing crossed
    assert crossings([1, 2, 4], [1.2, 1.0, 0.5]) == [Crossing(2, "transformer")]


def test_crossovers_pair_transformer_with_ssm_on_one_device(result_factory):
    rows = []
    for n, t_ms, s_ms in [(1024, 10, 20), (8192, 100, 100), (32768, 1300, 650)]:
        rows.append(
            result_factory(
                model="qwen", family="transformer", context_len=n, metrics={"ttft": ("ms", [t_ms])}
            )
        )
        rows.append(
            result_factory(model="mamba2", family="ssm", context_len=n, metrics={"ttft": ("ms", [s_ms])})
        )
        # Another device's points must not pair with these.
        rows.append(
            result_factory(
                device="rtx", model="mamba2", family="ssm", context_len=n, metrics={"ttft": ("ms", [1])}
            )
        )
    found = [c for c in crossovers(aggregate_points(rows)) if c.device == "orin-1"]
    assert len(found) == 1
    assert found[0].ratios == pytest.approx([0.5, 1.0, 2.0])
    assert [c.length_tokens for c in found[0].crossings] == pytest.approx([8192])


def test_a_non_positive_median_is_left_out_of_the_ratios(result_factory):
    """A device may send any finite number: a TTFT of -5 ms at one length, or two whose quotient
    underflows to 0, once made the log-log interpolation raise (math domain error), and with it the
    device's page and the report."""
    rows = []
    lengths = [(512, 5e-324, 1e300), (1024, -5, 10), (2048, 1e300, 1e-300), (4096, 0, 15)]
    for n, t_ms, s_ms in [*lengths, (8192, 10, 20), (32768, 100, 40)]:
        rows.append(
            result_factory(
                model="qwen", family="transformer", context_len=n, metrics={"ttft": ("ms", [t_ms])}
            )
        )
        rows.append(
            result_factory(model="mamba2", family="ssm", context_len=n, metrics={"ttft": ("ms", [s_ms])})
        )
    (found,) = crossovers(aggregate_points(rows))
    assert found.lengths_tokens == [8192, 32768]
    assert found.ratios == pytest.approx([0.5, 2.5])
    assert len(found.crossings) == 1 and 8192 < found.crossings[0].length_tokens < 32768
    assert characterize(rows)["crossovers"][0]["lengths_tokens"] == [8192, 32768]


def test_quadratic_fit_recovers_coefficients_and_limit():
    a, b, c = 500.0, 0.02, 1e-6
    lengths = [1024, 8192, 32768, 65536, 131072]
    fit = fit_quadratic(lengths, [a + b * n + c * n * n for n in lengths], "MiB")
    assert fit is not None
    assert (fit.a, fit.b, fit.c) == (pytest.approx(a), pytest.approx(b), pytest.approx(c))
    assert fit.rms_residual == pytest.approx(0, abs=1e-6)
    capacity = 24 * 1024.0
    expected = (-b + math.sqrt(b * b - 4 * c * (a - capacity))) / (2 * c)
    assert fit.length_at(capacity) == pytest.approx(expected)
    assert fit(expected) == pytest.approx(capacity)
    assert fit_quadratic([1, 2], [1, 2], "MiB") is None


def test_a_fit_that_overflows_is_no_fit():
    assert fit_quadratic([1024, 4096, 16384], [1e300, -1e300, 1e300], "ms") is None
    assert fit_quadratic([1024, 4096, 16384], [1.0, 2.0, 3.0], "ms") is not None


def test_linear_fit_limit_and_unreachable_capacity():
    fit = fit_quadratic([1000, 2000, 3000], [100.0, 200.0, 300.0], "MiB")
    assert fit is not None
    assert fit.length_at(1000.0) == pytest.approx(10_000)
    falling = fit_quadratic([1000, 2000, 3000], [300.0, 200.0, 100.0], "MiB")
    assert falling is not None and falling.length_at(1000.0) is None


def test_memory_fit_uses_medians_in_mib_and_reports_limit(result_factory):
    rows = [
        result_factory(context_len=n, metrics={"memory_peak": ("B", [(100 + n / 1024) * 2**20])})
        for n in (1024, 2048, 4096, 8192)
    ]
    (entry,) = memory_fits(aggregate_points(rows), capacity_mib=1124.0)
    assert entry["fit"]["unit"] == "MiB"
    assert entry["extrapolated_limit_tokens"] == pytest.approx(1024 * 1024, rel=1e-6)


def test_characterize_and_compare_shapes(result_factory):
    rows = [
        result_factory(device=d, context_len=n, metrics={"ttft": ("ms", [n / f])})
        for d, f in (("orin-1", 10), ("rtx", 100))
        for n in (1024, 2048)
    ]
    out = characterize(rows)
    assert {p["device"] for p in out["points"]} == {"orin-1", "rtx"}
    table = compare(rows)
    assert [r["context_len"] for r in table] == [1024, 2048]
    assert table[0]["by_device"]["orin-1"]["median"] == pytest.approx(102.4)
    assert table[0]["by_device"]["rtx"]["median"] == pytest.approx(10.24)


def test_max_context_search_records_fill_the_table_but_are_not_points(result_factory):
    grid = [result_factory(context_len=n, metrics={"ttft": ("ms", [1.0])}) for n in (1024, 4096)]
    search = result_factory(
        context_len=20_000,
        metrics={"max_context": ("tokens", [20_000])},
        details={"kind": "max_context", "memory_cap_bytes": 8 * 2**30},
    )
    only_search = result_factory(
        model="mamba2-780m", family="ssm", context_len=90_000, metrics={"max_context": ("tokens", [90_000])},
        details={"kind": "max_context"},
    )  # fmt: skip
    aggregates = aggregate_points([*grid, search, only_search])
    assert [a.context_len for a in aggregates] == [1024, 4096]
    table = {m.key.model: m for m in max_context(aggregates, [*grid, search, only_search])}
    assert table["qwen2.5-0.5b"].max_ok_tokens == 4096
    assert table["qwen2.5-0.5b"].searched_tokens == 20_000
    assert table["qwen2.5-0.5b"].search_memory_cap_bytes == 8 * 2**30
    assert (table["mamba2-780m"].max_ok_tokens, table["mamba2-780m"].searched_tokens) == (None, 90_000)
    assert table["mamba2-780m"].family == "ssm"


def test_a_search_that_ended_on_a_kernel_limit_says_so(result_factory):
    note = "the fault lies past 333046 tokens, where mamba_ssm's SSD kernels overflow int32 offsets"
    search = result_factory(
        model="mamba2-780m", family="ssm", context_len=331_776,
        metrics={"max_context": ("tokens", [331_776])},
        details={"kind": "max_context", "memory_cap_bytes": 24 * 2**30, "limit_note": note},
    )  # fmt: skip
    (entry,) = max_context([], [search])
    assert entry.as_dict()["search_limit_note"] == note
    assert entry.as_dict()["searched_tokens"] == 331_776


def test_compare_keeps_each_kernel_path_of_a_device(result_factory):
    native = result_factory(implementation={"scan": "mamba_ssm"}, metrics={"ttft": ("ms", [1.0])})
    fallback = result_factory(implementation={"scan": "torch"}, metrics={"ttft": ("ms", [9.0])})
    table = compare([native, fallback])
    assert sorted((r["implementation"], r["by_device"]["orin-1"]["median"]) for r in table) == [
        ("scan=mamba_ssm", 1.0),
        ("scan=torch", 9.0),
    ]
    figure = compare_figure({"metric": "ttft", "rows": table})
    assert sorted(t["y"][0] for t in figure["data"]) == [1.0, 9.0]
    assert len({t["name"] for t in figure["data"]}) == 2


def test_max_context_reads_search_records_from_a_generator(result_factory):
    search = result_factory(
        context_len=20_000, metrics={"max_context": ("tokens", [20_000])}, details={"kind": "max_context"}
    )
    (entry,) = max_context([], (r for r in [search]))
    assert (entry.searched_tokens, entry.family) == (20_000, "transformer")


def test_a_metric_in_incompatible_units_is_left_out_with_a_reason(result_factory):
    # e.g. an agent that sent a TTFT in GiB: the point keeps its other metrics and says why.
    a = result_factory(run_id="r1", metrics={"ttft": ("ms", [1, 2]), "decode_per_token": ("ms", [3.0])})
    b = result_factory(run_id="r2", metrics={"ttft": ("GiB", [1.0])})
    (point,) = aggregate_points([a, b])
    assert "ttft" not in point.metrics
    assert point.metrics["decode_per_token"].median == 3.0
    (problem,) = point.problems
    assert problem.startswith("ttft left out: cannot pool samples in units")
    assert point.as_dict()["problems"] == [problem]


def test_a_search_that_found_no_limit_is_a_lower_bound(result_factory):
    """A search whose every probe up to max_tokens ran found no limit: its length is a lower bound, and
    the table says so (the record's method does), never passing it for the limit."""
    bounded = result_factory(
        context_len=128, metrics={"max_context": ("tokens", [128])},
        details={"kind": "max_context", "search": {"bounded_by": "max_tokens=128", "largest_ok": 128}},
    )  # fmt: skip
    found = result_factory(
        model="mamba2-780m", family="ssm", context_len=96, metrics={"max_context": ("tokens", [96])},
        details={"kind": "max_context", "search": {"bounded_by": None, "largest_ok": 96}},
    )  # fmt: skip
    table = {m.key.model: m.as_dict() for m in max_context([], [bounded, found])}
    assert table["qwen2.5-0.5b"]["search_bounded_by"] == "max_tokens=128"
    assert table["mamba2-780m"]["search_bounded_by"] is None


def test_crossovers_never_pair_different_precisions(result_factory):
    """An fp32 Transformer against a bf16 SSM would time the precisions, not the architectures."""
    rows = []
    for n, t_ms, s_ms in [(1024, 10, 20), (8192, 100, 50)]:
        for precision in ("fp32", "bf16"):
            rows.append(result_factory(model="qwen", family="transformer", precision=precision,
                                       context_len=n, metrics={"ttft": ("ms", [t_ms])}))  # fmt: skip
        rows.append(result_factory(model="mamba2", family="ssm", precision="bf16", context_len=n,
                                   metrics={"ttft": ("ms", [s_ms])}))  # fmt: skip
    found = crossovers(aggregate_points(rows))
    assert [(c.transformer.precision, c.other.precision) for c in found] == [("bf16", "bf16")]


def test_a_failure_before_the_decode_counts_in_the_series_of_its_ok_points(result_factory):
    """A point that failed names only what its load chose (no prefill or decode path): it belongs to the
    curve of the ok points that ran that load, so the table finds the first failure above them."""
    load = {"runtime": "transformers", "ssm_scan": "transformers torch fallback"}
    ran = {**load, "prefill": "transformers forward, logits=last", "decode_path": "eager_dynamic_cache"}
    rows = [
        result_factory(model="mamba2", family="ssm", context_len=n, implementation=ran,
                       metrics={"ttft": ("ms", [1.0])})
        for n in (1024, 2048)
    ]  # fmt: skip
    rows.append(result_factory(model="mamba2", family="ssm", context_len=4096, outcome="oom",
                               implementation=load))  # fmt: skip
    aggregates = aggregate_points(rows)
    assert {a.key for a in aggregates} == {aggregates[0].key}
    (entry,) = max_context(aggregates, rows)
    assert (entry.max_ok_tokens, entry.first_failure_tokens, entry.failure_outcome) == (2048, 4096, "oom")


def test_a_failure_that_fits_two_kernel_paths_stays_apart(result_factory):
    load = {"runtime": "transformers"}
    rows = [
        result_factory(implementation={**load, "decode_path": path}, metrics={"ttft": ("ms", [1.0])})
        for path in ("eager_static_cache", "compiled_cuda_graph_static_cache")
    ]
    rows.append(result_factory(context_len=4096, outcome="oom", implementation=load))
    assert len({a.key for a in aggregate_points(rows)}) == 3
