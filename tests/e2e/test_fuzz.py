"""The fuzz suite: over 10,000 seeded hostile messages on every topic the collector and an agent read,
through a real mosquitto, around 1,000 valid records (50 of them sent twice). No thread dies, every
reject is counted by its reason, every valid record is stored exactly once. The generator and the
runner are the fuzz benchmark's (bench/collector/), which sends 100,000 and more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxscope.broker import MosquittoBroker
from ctxscope.shared.codec import REASONS

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[2] / "bench" / "collector"


def test_hostile_messages_on_every_topic(
    mosquitto: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import fuzz_pipeline
    from hostile import ANY_REJECT, VALID

    report: dict[str, Any] = fuzz_pipeline.run(
        mosquitto, tmp_path, seed=13, hostile=9_000, agent_messages=2_000, records=1_000, redelivered=50,
        timeout_s=60,
    )  # fmt: skip
    collector, agent = report["collector"], report["agent"]
    assert report["messages"] >= 10_000
    assert report["thread_deaths"] == []
    assert collector["stored"] == collector["records_in_store"] == 1_000 and collector["exactly_once"]
    assert collector["duplicates"] == 50 and collector["store_errors"] == 0
    named = {r: n for r, n in collector["expected"].items() if r not in (VALID, ANY_REJECT)}
    assert len(named) == 10  # every kind of hostile message was sent
    for reason, n in named.items():
        assert collector["rejected"].get(reason, 0) >= n, (reason, collector["rejected"])
    assert sum(collector["rejected"].values()) == sum(named.values()) + collector["expected"][ANY_REJECT]
    assert set(collector["rejected"]) <= REASONS | {"bad_topic", "device_mismatch", "wrong_channel"}
    assert collector["rejects_in_store"] == collector["rejected"]
    assert agent["commands_handled"] == agent["distinct_commands_handled"] == agent["expected"][VALID]
    for reason, n in agent["expected"].items():
        if reason not in (VALID, ANY_REJECT):
            assert agent["rejected"].get(reason, 0) >= n, (reason, agent["rejected"])
    assert sum(agent["rejected"].values()) == agent["sent"] - agent["commands_handled"]
    assert fuzz_pipeline.check(report) == []
    assert collector["connected_after"] and collector["writer_alive_after"] and agent["connected_after"]
