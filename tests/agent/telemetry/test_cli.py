"""`ctxscope agent telemetry`, run for real on this machine."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ctxscope.agent.cli import agent

pytestmark = pytest.mark.slow


def test_samples_host_and_writes_json(tmp_path):
    out = tmp_path / "samples.json"
    result = CliRunner().invoke(
        agent, ["telemetry", "--seconds", "1", "--rate-hz", "20", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "host" in result.output and "ram_used_bytes" in result.output
    data = json.loads(out.read_text())
    host = data["sources"]["host"]
    assert data["clock"] == "monotonic"
    assert len(host["t_ns"]) >= 15
    assert host["channels"]["ram_used_bytes"]["unit"] == "B"
    assert len(host["channels"]["util_cpu_pct"]["values"]) == len(host["t_ns"])
