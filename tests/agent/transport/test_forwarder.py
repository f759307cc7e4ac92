"""The forwarder's order of work within one pass, with a fake client and a stepped clock: a replay
requested at a reconnect is applied before the PUBACKs that arrive after it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ctxscope.agent.transport.forwarder import Forwarder
from ctxscope.agent.transport.spool import Spool
from ctxscope.shared.messages import Log

NS = 1_000_000_000


class FakeClient:
    """Takes every publish (a new mid each) and remembers the seqs' topics in order."""

    def __init__(self) -> None:
        self.mids = itertools.count(1)
        self.published: list[bytes] = []

    def publish(self, topic: str, payload: bytes, qos: int) -> Any:
        self.published.append(payload)
        info = mqtt.MQTTMessageInfo(next(self.mids))
        info.rc = mqtt.MQTT_ERR_SUCCESS
        return info


def test_a_replay_is_applied_before_the_acks_of_records_resent_after_a_long_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records 1-2 were acknowledged just before the broker died, record 3 was in flight. After a
    5-minute outage paho resends record 3 right after the reconnect, whose on_connect requests the
    replay; record 3's PUBACK prunes acknowledged rows older than 120 s. Applied after that PUBACK, the
    replay found records 1-2 gone, and a broker that had lost them never got them again."""
    clock = [1_800_000_000 * NS]
    monkeypatch.setattr("ctxscope.agent.transport.spool.time.time_ns", lambda: clock[0])
    spool = Spool(tmp_path / "spool.sqlite", "dev-1", keep_acked_s=120)
    for i in range(3):
        spool.emit(Log, level="info", message=f"m{i}")
    client = FakeClient()
    forwarder = Forwarder(client, spool, is_connected=lambda: True)  # type: ignore[arg-type]
    assert forwarder._iteration() and len(client.published) == 3  # mids 1-3 for seqs 1-3
    forwarder.on_puback(1)
    forwarder.on_puback(2)
    forwarder._iteration()
    assert [r.seq for r in spool.oldest(10)] == [3]
    disconnected = clock[0]
    clock[0] += 300 * NS  # the outage
    forwarder.request_replay(disconnected - 120 * NS)  # on_connect, then paho resends record 3...
    forwarder.on_puback(3)  # ...whose PUBACK comes before the forwarder's next pass
    forwarder._iteration()
    assert sorted(r.seq for r in spool.oldest(10)) == [1, 2], "the replay must find records 1-2"
