"""Every record's method string says what one sample is, and agrees with its windows' repetitions."""

from __future__ import annotations

import pytest

from ctxscope.agent.engine import point
from tests.support import assert_method_matches_windows


@pytest.mark.parametrize("min_window_ns", [0, 300_000_000])
def test_ttft_and_decode_methods_match_their_windows(min_window_ns: int) -> None:
    session = point.Session(point.ModelChoice(name="qwen2.5-0.5b", precision="fp32", device="cpu", tiny=True))
    policy = point.LoopPolicy(warmups=0, min_reps=2, max_reps=2, min_time_s=0.0)
    settings = point.PointSettings(
        context_len=16, decode_tokens=3, policy=policy, min_window_ns=min_window_ns
    )
    outcome = point.measure_point(session, settings)
    loops = outcome.record_details()  # the loops as the result record carries them
    ttft_loop = loops["ttft_loop"]
    if min_window_ns:  # a tiny prefill is far shorter than the window: several run back to back
        assert ttft_loop["inner"] > 1
    assert_method_matches_windows(outcome.metrics["ttft"].method, ttft_loop, "one prefill", "prefills")
    assert_method_matches_windows(
        outcome.metrics["decode_per_token"].method,
        loops["decode_loop"],
        "one greedy step",
        "greedy steps",
    )


def test_a_disagreeing_method_is_caught() -> None:
    loop = {"windows": [{"repetitions": 4}, {"repetitions": 4}]}
    with pytest.raises(AssertionError):
        assert_method_matches_windows(
            "cuda events; one prefill of 1024 tokens", loop, "one prefill", "prefills"
        )
    with pytest.raises(AssertionError):
        assert_method_matches_windows(
            "mean of 2 back-to-back prefills (one window each)", loop, "one prefill", "prefills"
        )
