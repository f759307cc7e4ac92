"""`agent profile`'s options and exit status: bounds as in plans, peak keys by name, 1 on a failed length."""

from __future__ import annotations

from click.testing import CliRunner

from ctxscope.agent.profiling.cli import profile
from ctxscope.agent.profiling.roofline import peak_keys

TINY = ["--tiny", "--torch-device", "cpu", "--precision", "fp32", "--no-progress"]


def test_lengths_past_the_plans_cap_are_refused() -> None:
    """A 10^11-token length once went on to ask for an 800 GB allocation."""
    result = CliRunner().invoke(profile, ["qwen2.5-0.5b", *TINY, "--lengths", "32,99999999999"])
    assert result.exit_code == 2, result.output
    assert "'32,99999999999': each length must be 1 to 16,777,216 tokens, as in plans" in result.output


def test_an_unknown_peak_key_names_the_option_and_the_keys() -> None:
    result = CliRunner().invoke(profile, ["qwen2.5-0.5b", *TINY, "--lengths", "16", "--peaks", "nope"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--peaks': 'nope' is not one of" in result.output
    assert all(key in result.output for key in peak_keys())


def test_a_failed_length_exits_1_like_agent_run() -> None:
    """GPT-Neo's learned positions end at 2048: 2100 tokens fault, the other length is profiled."""
    args = ["gpt-neo-125m", *TINY, "--lengths", "16,2100", "--iterations", "1", "--no-timed"]
    result = CliRunner().invoke(profile, args)
    assert result.exit_code == 1, result.output
    assert "gpt-neo-125m @ 2100: fault" in result.output and "share %" in result.output
