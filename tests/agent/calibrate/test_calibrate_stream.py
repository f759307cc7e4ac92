"""`ctxscope agent calibrate --config` streams its records through the spool and a real mosquitto into
the collector's store, where prediction reads them back as a calibration."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.agent.cli import agent
from ctxscope.broker import MosquittoBroker
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.predict.fleet import device_rates
from ctxscope.collector.store import Store
from tests.support import wait_for


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_calibration_reaches_the_store(mosquitto: MosquittoBroker, store: Store, tmp_path: Path) -> None:
    device = "nano-cal"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'device = "{device}"\nbroker_host = "{mosquitto.host}"\nbroker_port = {mosquitto.port}\n'
        f'spool_path = "{tmp_path / "spool.sqlite"}"\n'
    )
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="calibrate_collector")
    ingest.start()
    try:
        assert ingest.wait_connected(10)
        result = CliRunner().invoke(
            agent,
            ["calibrate", "--torch-device", "cpu", "--tiny", "--budget-s", "3", "--config", str(config)],
        )
        assert result.exit_code == 0, result.output
        wait_for(lambda: len(store.results(device)) == 7, 20, "seven calibration results in the store")
        wait_for(lambda: store.runs(device) and store.runs(device)[0].get("outcome"), 20, "the run's end")
    finally:
        ingest.stop()
    runs = store.runs(device)
    assert "calibrate" in runs[0]["plan"] and runs[0]["outcome"] == "completed"
    records = [{**r, "kind": "run_started", "ts": r["started_ts"]} for r in runs]
    records += [{**r, "kind": "result"} for r in store.results(device)]
    rates = device_rates(device, records)
    assert rates.rates["gemm"].status == "measured" and rates.host_per_op_ms is not None
    assert "selective_scan" not in rates.rates  # absent on this CPU, and no peak table entry for it
