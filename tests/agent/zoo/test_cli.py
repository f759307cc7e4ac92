"""`ctxscope agent models`: the table and its JSON twin."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ctxscope.agent.cli import agent
from ctxscope.agent.zoo import list_models


def test_json_lists_every_entry_with_computed_sizes() -> None:
    result = CliRunner().invoke(agent, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == [spec.name for spec in list_models()]
    qwen = rows["qwen2.5-0.5b"]
    assert qwen["parameters"] == 494_032_768
    assert qwen["kv_cache_bytes_per_token_bf16"] == 12_288 and qwen["state_bytes_bf16"] == 0
    assert rows["mamba2-780m"]["kv_cache_bytes_per_token_bf16"] == 0
    assert rows["mamba2-780m"]["ssd_int32_limit_tokens"] == 333_046
    assert qwen["ssd_int32_limit_tokens"] is None and rows["mamba-790m"]["ssd_int32_limit_tokens"] is None
    hymba = rows["hymba-1.5b"]
    assert not hymba["available"] and "parameters" not in hymba and hymba["unavailable_reason"]


def test_json_with_kernels() -> None:
    result = CliRunner().invoke(agent, ["models", "--json", "--kernels"])
    payload = json.loads(result.stdout)
    assert payload["kernels"]["cuda"] == "not available"
    assert len(payload["models"]) == len(list_models())


def test_table_names_every_entry() -> None:
    result = CliRunner().invoke(agent, ["models"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for spec in list_models():
        assert spec.name in result.output
    assert "hymba-1.5b is unavailable" in result.output
