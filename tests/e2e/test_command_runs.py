"""`ctxscope agent profile --config` and `agent maxctx --config` record runs like `agent run`: through the
spool and a real mosquitto into the collector's store, where the device page shows their operator
shares and max context (tiny models on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.agent.cli import agent
from ctxscope.broker import MosquittoBroker
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.readmodel import views
from ctxscope.collector.store import Store
from tests.support import wait_for


def _stream(mosquitto: MosquittoBroker, store: Store, tmp_path: Path, device: str, args: list[str]) -> dict:
    """Run one agent command against the broker; return its run as the store has it, once finished."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'device = "{device}"\nbroker_host = "{mosquitto.host}"\nbroker_port = {mosquitto.port}\n'
        f'spool_path = "{tmp_path / "spool.sqlite"}"\n'
    )
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id=f"{device}_collector")
    ingest.start()
    try:
        assert ingest.wait_connected(10)
        result = CliRunner().invoke(
            agent, [*args, "--torch-device", "cpu", "--tiny", "--config", str(config)]
        )
        assert result.exit_code == 0, result.output
        wait_for(lambda: store.runs(device) and store.runs(device)[0].get("outcome"), 30, "the run's end")
    finally:
        ingest.stop()
    (run,) = store.runs(device)
    return run


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_profile_run_reaches_the_device_page(
    mosquitto: MosquittoBroker, store: Store, tmp_path: Path
) -> None:
    device = "nano-profile"
    args = ["profile", "qwen2.5-0.5b", "--precision", "fp32", "--lengths", "16,32", "--iterations", "1"]
    run = _stream(mosquitto, store, tmp_path, device, args)
    assert (run["outcome"], run["points_ok"], run["points_failed"], run["total_points"]) == (
        "completed",
        2,
        0,
        2,
    )
    assert run["plan"]["profile"]["context_lengths"] == [16, 32] and run["manifest"]["device"] == "cpu"
    results = store.results(device, run["run_id"])
    assert sorted(r["context_len"] for r in results) == [16, 32]
    assert all(r["details"]["kind"] == "profile" for r in results)
    page = views.device(store, device)
    shares = page["operator_shares"]
    assert [(s["model"], s["context_len"], s["phase"]) for s in shares] == [
        ("qwen2.5-0.5b (shrunk)", 16, "prefill"),
        ("qwen2.5-0.5b (shrunk)", 32, "prefill"),
    ]
    assert all(s["run_id"] == run["run_id"] and sum(s["share_pct"].values()) > 99 for s in shares)
    assert page["characterization"]["points"] == []  # profiles are not curve points


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_max_context_run_reaches_the_device_page(
    mosquitto: MosquittoBroker, store: Store, tmp_path: Path
) -> None:
    device = "nano-maxctx"
    args = ["maxctx", "qwen2.5-0.5b", "--precision", "fp32", "--start", "64", "--max-tokens", "128"]
    run = _stream(mosquitto, store, tmp_path, device, args)
    assert (run["outcome"], run["points_ok"], run["total_points"]) == ("completed", 1, 1)
    assert run["plan"]["max_context"]["start"] == 64 and run["plan"]["tiny"]
    (result,) = store.results(device, run["run_id"])
    assert (
        result["details"]["kind"] == "max_context" and result["point_id"] == "qwen2.5-0.5b/fp32/max-context"
    )
    (found,) = views.device(store, device)["characterization"]["max_context"]
    assert found["model"] == "qwen2.5-0.5b (shrunk)"
    assert found["searched_tokens"] == 128 and found["first_failure_tokens"] is None  # bounded, no failure
