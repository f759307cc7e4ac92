"""Collector ingest: validation of junk and of contract breaches, rejects counted, the rest stored."""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import msgpack
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxscope.broker import MosquittoBroker, free_port
from ctxscope.collector.ingest import Ingest, validate
from ctxscope.collector.store import Accepted, BatchOutcome, Rejected, open_store
from ctxscope.collector.store.sqlite import SQLiteStore
from ctxscope.shared.codec import REASONS, encode
from ctxscope.shared.messages import CHANNEL_OF_KIND, Log, Status
from ctxscope.shared.topics import Channel, command_topic, topic_for
from tests.support import point_result

DEV = "bench-1"
STREAM = "00000000000000aa"
RESULT_TOPIC = topic_for(DEV, Channel.RESULT)

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def started_publisher(broker: MosquittoBroker) -> mqtt.Client:
    """An MQTT 3.1.1 client connected to `broker`, its network loop running."""
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    return publisher


def stop_publisher(publisher: mqtt.Client) -> None:
    publisher.loop_stop()
    publisher.disconnect()


@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_rejected_with_a_reason(payload: bytes) -> None:
    verdict = validate(RESULT_TOPIC, payload)
    assert isinstance(verdict, Rejected)
    assert verdict.reason in REASONS


@given(
    st.dictionaries(st.text(max_size=12), json_like, max_size=8),
    st.fixed_dictionaries({}, optional={"v": st.just(1), "kind": st.sampled_from(sorted(CHANNEL_OF_KIND))}),
)
def test_arbitrary_maps_are_rejected_with_a_reason(
    junk: dict[str, object], envelope: dict[str, object]
) -> None:
    body = {**junk, **envelope}
    verdict = validate(RESULT_TOPIC, msgpack.packb(body, use_bin_type=True))
    assert isinstance(verdict, Rejected)
    assert verdict.reason in {"unsupported_version", "invalid"}


def test_contract_breaches_are_rejected() -> None:
    good = encode(point_result(DEV, STREAM, 1))
    assert isinstance(validate(RESULT_TOPIC, good), Accepted)
    cases = {
        "device_mismatch": validate(topic_for("other-device", Channel.RESULT), good),
        "wrong_channel": validate(topic_for(DEV, Channel.TELEMETRY), good),
        "unexpected_channel": validate(command_topic(DEV, "run"), good),
        "bad_topic": validate("ctxscope/v2/bench-1/result", good),
    }
    for reason, verdict in cases.items():
        assert isinstance(verdict, Rejected) and verdict.reason == reason, (reason, verdict)


@pytest.mark.slow
def test_junk_on_the_wire_is_counted_and_ingest_keeps_storing(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ingest.db'}")
    commits: list[BatchOutcome] = []
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="ingest_junk", on_commit=commits.append)
    ingest.start()
    assert ingest.wait_connected(10)
    time.sleep(0.1)  # let the subscription settle before publishing
    publisher = started_publisher(mosquitto)
    sent = {"junk": 0, "good": 0}

    @settings(max_examples=40, deadline=None)
    @given(junk=st.lists(st.binary(max_size=64), min_size=1, max_size=5))
    def publish_junk_then_a_record(junk: list[bytes]) -> None:
        sent["good"] += 1
        infos = [publisher.publish(RESULT_TOPIC, payload, qos=1) for payload in junk]
        infos.append(publisher.publish(RESULT_TOPIC, encode(point_result(DEV, STREAM, sent["good"])), qos=1))
        for info in infos:
            info.wait_for_publish(5)
        sent["junk"] += len(junk)
        deadline = time.monotonic() + 10
        while ingest.counters().received < sent["junk"] + sent["good"] and time.monotonic() < deadline:
            time.sleep(0.005)
        counters = ingest.counters()
        assert (counters.stored, sum(counters.rejected.values())) == (sent["good"], sent["junk"])

    try:
        publish_junk_then_a_record()
        assert sum(r["count"] for r in store.reject_counts()) == sent["junk"]
        assert store.record_seqs(DEV, STREAM) == list(range(1, sent["good"] + 1))
        assert sum(c.stored for c in commits) == sent["good"]
        assert sum(c.rejected for c in commits) == sent["junk"]
    finally:
        stop_publisher(publisher)
        ingest.stop()
        store.close()


@pytest.mark.slow
def test_nul_bytes_are_stored_on_postgresql(mosquitto: MosquittoBroker, pg_url: str) -> None:
    """PostgreSQL text and JSONB cannot hold NUL: a log and a result with NUL in text and in JSON are
    stored (NUL as U+FFFD), a reject whose detail holds NUL is counted, and nothing is retried forever."""
    store = open_store(pg_url)
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="ingest_pg")
    ingest.start()
    assert ingest.wait_connected(10)
    time.sleep(0.1)
    publisher = started_publisher(mosquitto)
    try:
        nul_log = Log(device=DEV, stream=STREAM, seq=2, ts=1, level="info", message="nul \x00 byte")
        nul_result = point_result(DEV, STREAM, 3).model_copy(
            update={"error": "e\x00", "details": {"k\x00": "v\x00", "esc": "\\u0000"}}
        )
        # invalid (a metric without samples) under a key with NUL, which the reject's detail names
        bad_metrics = {"ttft\x00": {"unit": "s", "method": "m", "samples": []}}
        bad = msgpack.packb({**nul_result.model_dump(), "seq": 4, "metrics": bad_metrics}, use_bin_type=True)
        verdict = validate(RESULT_TOPIC, bad)
        assert isinstance(verdict, Rejected) and "\x00" in verdict.detail
        for topic, payload in (
            (RESULT_TOPIC, encode(point_result(DEV, STREAM, 1))),
            (topic_for(DEV, Channel.LOG), encode(nul_log)),
            (RESULT_TOPIC, encode(nul_result)),
            (RESULT_TOPIC, bad),
        ):
            publisher.publish(topic, payload, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while ingest.counters().received < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        counters = ingest.counters()
        assert (counters.received, counters.stored, counters.store_errors) == (4, 3, 0)
        assert counters.rejected == {"invalid": 1}
        results = store.results(DEV)
        assert [r["seq"] for r in results] == [1, 3]
        assert results[1]["error"] == "e\ufffd"
        assert results[1]["details"] == {"k\ufffd": "v\ufffd", "esc": "\\u0000"}
        assert store.logs(DEV)[0]["message"] == "nul \ufffd byte"
        (reject,) = store.reject_counts()
        assert reject["reason"] == "invalid" and reject["topic"] == RESULT_TOPIC
        assert "ttft\ufffd" in reject["last_detail"]
    finally:
        stop_publisher(publisher)
        ingest.stop()
        store.close()


@pytest.mark.slow
def test_a_replayed_retained_status_does_not_refresh_last_seen(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Every collector (re)start gets the retained status again: that is no sign of the device."""
    publisher = started_publisher(mosquitto)
    status = Status(device=DEV, stream=STREAM, seq=0, ts=1, state="offline", birth=1)
    publisher.publish(topic_for(DEV, Channel.STATUS), encode(status), qos=1, retain=True).wait_for_publish(5)
    stop_publisher(publisher)
    store = open_store(f"sqlite:///{tmp_path / 'ingest.db'}")
    seen = []
    try:
        for _ in range(2):
            ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="ingest_retained")
            ingest.start()
            try:
                deadline = time.monotonic() + 10
                while ingest.counters().received < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert ingest.counters().received == 1
            finally:
                ingest.stop()
            (device,) = store.devices()
            seen.append(device["last_seen_ns"])
        assert seen[0] == seen[1]
    finally:
        store.close()


class FlakySQLiteStore(SQLiteStore):
    """A real SQLite store whose first writes fail the way a locked database does."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def write_batch(self, items):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().write_batch(items)


@pytest.mark.slow
def test_a_busy_database_delays_messages_but_never_rejects_them(
    mosquitto: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ctxscope.collector.ingest.STORE_RETRY_S", 0.1)
    # two failures: the batch write and, on the old one-by-one path, the single write
    store = FlakySQLiteStore(tmp_path / "c.db", failures=2)
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="ingest_busy")
    ingest.start()
    assert ingest.wait_connected(10)
    publisher = started_publisher(mosquitto)
    try:
        publisher.publish(
            topic_for(DEV, Channel.RESULT), encode(point_result(DEV, STREAM, 1)), qos=1
        ).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while ingest.counters().stored < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r["seq"] for r in store.results(DEV)] == [1]
        assert store.reject_counts() == []
    finally:
        stop_publisher(publisher)
        ingest.stop()
        store.close()


def test_stopping_an_ingest_that_never_started_is_harmless(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        Ingest(store, "127.0.0.1", 1, client_id="never_started").stop()
    finally:
        store.close()


class GatheringSQLiteStore(SQLiteStore):
    """A real SQLite store that asks ingest to gather a batch for two seconds before it commits (long
    beside the test's ~0.5 s of publishing, so a slow machine still gathers them in two commits)."""

    commit_gather_s = 2.0


def test_an_unreachable_broker_is_said_while_ingest_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    with closing(open_store(f"sqlite:///{tmp_path / 'c.db'}")) as store:
        ingest = Ingest(store, "127.0.0.1", port, client_id="ingest_unreachable")
        with caplog.at_level(logging.WARNING, logger="ctxscope.collector.ingest"):
            ingest.start()
            try:
                deadline = time.monotonic() + 10
                while "cannot reach the broker" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                ingest.stop()
    assert f"collector cannot reach the broker 127.0.0.1:{port} (ConnectionRefusedError" in caplog.text


@pytest.mark.slow
def test_messages_that_trickle_in_are_gathered_into_one_commit(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A store that stages (its commits share the staging tables' last pages) gets the messages of its
    gathering time in one commit, not one commit per message."""
    store = GatheringSQLiteStore(tmp_path / "g.db")
    ingest = Ingest(store, mosquitto.host, mosquitto.port, client_id="ingest_gather")
    ingest.start()
    assert ingest.wait_connected(10)
    publisher = started_publisher(mosquitto)
    try:
        for s in range(1, 21):  # over 0.4 s: without gathering, one commit each as they trickle in
            publisher.publish(RESULT_TOPIC, encode(point_result(DEV, STREAM, s)), qos=1).wait_for_publish(5)
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while ingest.counters().stored < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ingest.counters().stored == 20
        assert ingest.counters().batches <= 2  # the first message may be taken alone before the rest arrive
        assert store.record_seqs(DEV, STREAM) == list(range(1, 21))
    finally:
        stop_publisher(publisher)
        ingest.stop()
        store.close()
