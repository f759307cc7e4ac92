"""A one-shot command's runs move the device's retained status as the daemon's do: busy, naming the
run, from its RunStarted to its RunFinished, then online again. The collector takes an online device
whose status names no run to be running none (tests/collector/readmodel/test_run_states.py)."""

from __future__ import annotations

import queue
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.streaming import RunStatusSink
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.broker import MosquittoBroker
from ctxscope.shared.codec import decode
from ctxscope.shared.messages import RunFinished, RunProgress, RunStarted, Status
from ctxscope.shared.topics import Channel, topic_for

pytestmark = pytest.mark.slow
DEV = "one-shot-dev"


def _next_status(statuses: queue.Queue[bytes]) -> tuple[str, str | None]:
    message = decode(statuses.get(timeout=10))
    assert isinstance(message, Status)
    return message.state, message.run_id


def test_a_one_shot_run_says_busy_with_its_run_until_it_finishes(
    mosquitto: MosquittoBroker, publisher: mqtt.Client, tmp_path: Path
) -> None:
    statuses: queue.Queue[bytes] = queue.Queue()
    publisher.on_message = lambda _c, _u, m: statuses.put(m.payload)
    publisher.subscribe(topic_for(DEV, Channel.STATUS), qos=1)
    config = AgentConfig(device=DEV, broker_port=mosquitto.port, spool_path=tmp_path / "spool.sqlite")
    link = Link(config, Spool(config.resolved_spool_path(), DEV))
    link.start()
    try:
        assert link.wait_connected(10)
        assert _next_status(statuses) == ("online", None)
        sink = RunStatusSink(link.spool, link)
        started = sink.emit(
            RunStarted, run_id="r-1", plan={"name": "tiny"}, plan_hash="0" * 16, total_points=1
        )
        assert isinstance(started, RunStarted) and started.seq == 1  # spooled as before
        assert _next_status(statuses) == ("busy", "r-1")
        sink.emit(RunProgress, run_id="r-1", done=0, total=1)
        sink.emit(RunFinished, run_id="r-1", outcome="completed", points_ok=1, points_failed=0)
        assert _next_status(statuses) == ("online", None)
        assert statuses.empty()  # a progress record does not move the status
    finally:
        link.close(5)


class _BrokenLink:
    def set_status(self, *_: object, **__: object) -> None:
        raise RuntimeError("the client's socket is gone")


def test_a_status_that_cannot_go_out_does_not_end_the_run(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", DEV)
    try:
        sink = RunStatusSink(spool, _BrokenLink())  # type: ignore[arg-type]
        started = sink.emit(RunStarted, run_id="r-2", plan={}, plan_hash="0" * 16, total_points=0)
        finished = sink.emit(RunFinished, run_id="r-2", outcome="completed", points_ok=0, points_failed=0)
        assert (started.seq, finished.seq) == (1, 2) and spool.backlog() == 2  # both records kept
    finally:
        spool.close()
