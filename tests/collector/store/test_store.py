"""The collector store on SQLite and PostgreSQL: dedup, typed tables, state births, gaps, atomic batches."""

from __future__ import annotations

import secrets
import threading
import time

import numpy as np
import pytest

from ctxscope.collector.ingest import BAD_TOPIC_KEY, validate
from ctxscope.collector.store import Accepted, Gap, Rejected, Store, open_store
from ctxscope.shared.codec import encode
from ctxscope.shared.messages import (
    CHANNEL_OF_KIND,
    Command,
    CommandAck,
    DeviceMeta,
    Log,
    Message,
    RunFinished,
    RunProgress,
    RunStarted,
    Status,
    TelemetryBatch,
    TelemetryChannel,
)
from ctxscope.shared.topics import Channel, command_topic, topic_for
from tests.conftest import PG_BASE_URL
from tests.support import point_result

DEV = "orin-nx-1"
STREAM = "0123456789abcdef"


def accepted(message: Message) -> Accepted:
    return Accepted(topic_for(message.device, CHANNEL_OF_KIND[message.kind]), message)


def envelope(seq: int) -> dict[str, object]:
    return {"device": DEV, "stream": STREAM, "seq": seq, "ts": 1_000 + seq}


def test_records_are_deduplicated_by_device_stream_seq(store: Store) -> None:
    first = store.write_batch([accepted(point_result(DEV, STREAM, s)) for s in (1, 2, 3)])
    again = store.write_batch([accepted(point_result(DEV, STREAM, s)) for s in (2, 3, 4)])
    assert (first.stored, first.duplicates) == (3, 0)
    assert (again.stored, again.duplicates) == (1, 2)
    assert store.record_count(DEV) == 4
    results = store.results(DEV)
    assert [r["seq"] for r in results] == [1, 2, 3, 4]
    assert results[0]["metrics"]["ttft"] == {
        "unit": "s",
        "method": "cuda events, median of reps",
        "samples": [0.1, 0.11, 0.12],
    }
    assert results[0]["implementation"] == {"attention": "sdpa"}


def test_a_record_twice_in_one_batch_is_stored_once(store: Store) -> None:
    """A redelivery can land in the batch that holds the original: the first of a key is stored, every
    other copy (in the batch or already stored) is counted as a duplicate, and no typed row doubles."""
    store.write_batch([accepted(point_result(DEV, STREAM, 1))])
    outcome = store.write_batch(
        [accepted(point_result(DEV, STREAM, s)) for s in (2, 1, 2, 3, 3, 2)]
        + [accepted(Log(**envelope(4), level="info", logger="agent", message="m")) for _ in range(2)]
    )
    assert (outcome.stored, outcome.duplicates) == (3, 5)
    assert store.record_seqs(DEV, STREAM) == [1, 2, 3, 4]
    assert [r["seq"] for r in store.results(DEV)] == [1, 2, 3]
    assert [r["seq"] for r in store.logs(DEV)] == [4]


def test_two_kinds_under_one_key_in_one_batch_store_the_first_and_leave_merging_working(
    store: Store,
) -> None:
    """A device that sends a result and a log at one seq in one batch: the first (in arrival order) is
    keyed and typed as what it is, the other is a duplicate, and merging staged records goes on (a
    result staged under a key already written as a log stopped every later merge, and retention)."""
    log = Log(**envelope(7), level="info", logger="agent", message="m")
    outcome = store.write_batch([accepted(point_result(DEV, STREAM, 7)), accepted(log)])
    assert (outcome.stored, outcome.duplicates) == (1, 1)
    outcome = store.write_batch([accepted(Log(**envelope(8), level="info", logger="agent", message="m"))])
    outcome = store.write_batch(
        [accepted(point_result(DEV, STREAM, 8)), accepted(point_result("good-1", STREAM, 1))]
    )
    assert (outcome.stored, outcome.duplicates) == (1, 1)
    store.merge_staged()
    assert [r["seq"] for r in store.results(DEV)] == [7]
    assert [r["seq"] for r in store.logs(DEV)] == [8]
    assert [r["seq"] for r in store.results("good-1")] == [1]
    kinds = store._query("SELECT seq, kind FROM records WHERE device = ? ORDER BY seq", (DEV,))
    assert [(r["seq"], r["kind"]) for r in kinds] == [(7, "result"), (8, "log")]


def test_a_new_stream_s_state_is_ordered_by_device_clock_not_by_its_restarted_births(store: Store) -> None:
    """A board whose spool was lost starts a new stream, its births counting from 1 again: its status
    and meta are newer by the device clock, and the old stream's late will is not."""
    old, new = STREAM, "fedcba9876543210"

    def status(stream: str, ts: int, state: str, birth: int) -> Accepted:
        return accepted(Status(device=DEV, stream=stream, seq=0, ts=ts, state=state, birth=birth))

    def meta(stream: str, ts: int, birth: int, version: str) -> Accepted:
        fields = {"agent_version": version, "hostname": "orin", "telemetry": {}}
        return accepted(DeviceMeta(device=DEV, stream=stream, seq=0, ts=ts, birth=birth, **fields))

    store.write_batch([status(old, 1_000, "online", 5000), meta(old, 1_000, 5000, "0.1.0")])
    store.write_batch([status(old, 2_000, "offline", 5000)])
    outcome = store.write_batch([status(new, 3_000, "online", 1), meta(new, 3_000, 1, "0.2.0")])
    assert (outcome.state_applied, outcome.state_stale) == (2, 0)
    (device,) = store.devices()
    assert (device["state"], device["birth"], device["meta"]["agent_version"]) == ("online", 1, "0.2.0")
    outcome = store.write_batch([status(old, 2_500, "offline", 5001), meta(old, 2_500, 5001, "0.1.0")])
    assert (outcome.state_applied, outcome.state_stale) == (0, 2)
    store.write_batch([status(new, 4_000, "offline", 1)])
    assert store.devices()[0]["state"] == "offline"


def test_gaps_show_missing_seqs_per_stream(store: Store) -> None:
    store.write_batch([accepted(point_result(DEV, STREAM, s)) for s in (1, 2, 5, 9)])
    store.write_batch([accepted(point_result(DEV, "fedcba9876543210", s)) for s in (3,)])
    streams = {row["stream"]: row for row in store.streams(DEV)}
    assert (streams[STREAM]["records"], streams[STREAM]["first_seq"], streams[STREAM]["last_seq"]) == (
        4,
        1,
        9,
    )
    assert store.gaps(DEV) == [
        Gap(STREAM, 3, 4),
        Gap(STREAM, 6, 8),
        Gap("fedcba9876543210", 1, 2),
    ]


def test_status_with_older_birth_is_ignored(store: Store) -> None:
    online2 = Status(**envelope(0), state="online", birth=2)
    late_will1 = Status(**envelope(0), state="offline", birth=1)
    outcome = store.write_batch([accepted(online2), accepted(late_will1)])
    assert (outcome.state_applied, outcome.state_stale) == (1, 1)
    (device,) = store.devices()
    assert (device["device"], device["state"], device["birth"]) == (DEV, "online", 2)
    store.write_batch([accepted(Status(**envelope(0), state="offline", birth=2))])
    assert store.devices()[0]["state"] == "offline"
    meta = DeviceMeta(
        **envelope(0), birth=2, agent_version="0.1.0", hostname="orin", telemetry={"jtop": ["power"]}
    )
    store.write_batch([accepted(meta)])
    assert store.devices()[0]["meta"]["telemetry"] == {"jtop": ["power"]}
    assert store.record_count() == 0  # state is not a record of the stream


def test_runs_logs_acks_and_rejects(store: Store) -> None:
    store.write_batch(
        [
            accepted(RunStarted(**envelope(1), run_id="r1", plan={"models": ["m"]}, plan_hash="abcdef12",
                                total_points=2, manifest={"torch": "2.13"})),
            accepted(RunProgress(**envelope(2), run_id="r1", done=1, total=2, point="m@1024")),
            accepted(RunFinished(**envelope(3), run_id="r1", outcome="completed", points_ok=2,
                                 points_failed=0)),
            accepted(Log(**envelope(4), level="warning", message="slow path")),
            accepted(CommandAck(**envelope(5), command_id="c1", name="run", accepted=False, reason="busy")),
            Rejected(topic_for(DEV, Channel.RESULT), "not_msgpack", "bad byte", b"\xc1junk"),
            Rejected(topic_for(DEV, Channel.RESULT), "not_msgpack", "bad byte again", b"\xc1more"),
        ]
    )  # fmt: skip
    (run,) = store.runs(DEV)
    assert (run["plan"], run["done"], run["outcome"], run["points_ok"]) == (
        {"models": ["m"]},
        1,
        "completed",
        2,
    )
    assert store.logs(DEV)[0]["message"] == "slow path"
    assert store.command_acks(DEV)[0]["accepted"] is False
    (reject,) = store.reject_counts()
    assert (reject["reason"], reject["count"], reject["last_example"]) == ("not_msgpack", 2, b"\xc1more")


def test_messages_on_topics_outside_the_contract_share_one_bounded_reject_row(store: Store) -> None:
    """A topic of thousands of characters (PostgreSQL's index of `rejects` takes at most 2,704 bytes a
    row: the failing insert held every later record back for good), and many distinct ones: one row."""
    payload = encode(point_result(DEV, STREAM, 1))
    topics = [
        f"ctxscope/v1/{secrets.token_hex(2000)}/result",
        "ctxscope/v1/Bad_Id/result",
        "ctxscope/v2/x/result",
    ]
    outcome = store.write_batch([validate(topic, payload) for topic in topics])
    assert outcome.rejected == 3
    (reject,) = store.reject_counts()
    assert (reject["reason"], reject["topic"], reject["count"]) == ("bad_topic", BAD_TOPIC_KEY, 3)
    assert len(reject["last_detail"]) < 400


def test_latest_telemetry_window(store: Store) -> None:
    def batch(seq: int, start_s: int) -> TelemetryBatch:
        t = (np.arange(10, dtype="<i8") + start_s * 10) * 100_000_000  # 10 Hz
        power = np.full(10, float(seq), dtype="<f4")
        channel = TelemetryChannel(unit="W", dtype="f4", data=power.tobytes())
        return TelemetryBatch(
            **envelope(seq),
            source="nvml",
            mono_to_wall_ns=5_000_000_000,
            t_ns=t.tobytes(),
            channels={"power_w": channel},
        )

    store.write_batch([accepted(batch(s, s)) for s in (1, 2, 3)])
    assert store.telemetry_channels(DEV) == [("nvml", "power_w", "W")]
    series = store.latest_telemetry(DEV, "nvml", "power_w", seconds=1.45)
    assert series is not None and series.unit == "W"
    assert len(series.values) == 15  # the last 1.45 s at 10 Hz ends at the newest sample
    assert series.values[-1] == 3.0 and series.values[0] == 2.0
    assert np.all(np.diff(series.wall_ns) > 0)
    assert store.latest_telemetry(DEV, "nvml", "temp_c", seconds=5) is None


def test_failed_batch_writes_nothing(store: Store) -> None:
    good = accepted(point_result(DEV, STREAM, 1))
    command = Command(**envelope(2), command_id="c", name="run", expires_at=1)
    not_a_record = Accepted(command_topic(DEV, "run"), command)
    with pytest.raises(ValueError, match="not a record"):
        store.write_batch([good, not_a_record])
    assert store.record_count() == 0
    assert store.devices() == []


def test_postgres_store_reconnects_after_the_server_drops_it(pg_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    app = f"ctxscope_store_{secrets.token_hex(4)}"
    store = open_store(f"{pg_url}&application_name={app}")
    try:
        store.write_batch([accepted(point_result(DEV, STREAM, 1))])
        with psycopg.connect(PG_BASE_URL, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchall()
        assert len(killed) == 2  # the writer and the reader
        with pytest.raises(psycopg.OperationalError):
            store.write_batch([accepted(point_result(DEV, STREAM, 2))])
        store.write_batch([accepted(point_result(DEV, STREAM, 2))])
        assert store.record_seqs(DEV, STREAM) == [1, 2]
    finally:
        store.close()


def test_a_replayed_retained_message_is_no_sign_of_life(store: Store) -> None:
    status = Status(**envelope(0), state="offline", birth=1)
    store.write_batch([accepted(status)])
    (first,) = store.devices()
    store.write_batch([Accepted(topic_for(DEV, Channel.STATUS), status, retained=True)])
    assert store.devices()[0]["last_seen_ns"] == first["last_seen_ns"]
    store.write_batch([accepted(status)])
    assert store.devices()[0]["last_seen_ns"] > first["last_seen_ns"]


def writer_thread(
    outcomes: dict[str, object], name: str, store: Store, items: list[Accepted | Rejected]
) -> threading.Thread:
    """A thread that writes `items` and puts the stored count, or the exception (a deadlock's victim),
    in `outcomes[name]`."""

    def write() -> None:
        try:
            outcomes[name] = store.write_batch(items).stored
        except Exception as exc:
            outcomes[name] = exc

    return threading.Thread(target=write)


def test_two_collectors_writing_the_same_devices_in_opposite_orders_do_not_deadlock(pg_url: str) -> None:
    """Batch A holds dev-a and waits for dev-m (locked by a third client); batch B arrives with dev-z
    then dev-a. Written in arrival order, B would hold dev-z and wait for A, and A, once dev-m is free,
    would wait for dev-z: a deadlock, one batch failing. Written in device order, B waits for dev-a
    behind A, and both are stored."""
    import psycopg

    first, second = open_store(pg_url), open_store(pg_url)
    stream = "00000000000000dd"

    def batch(seq: int, *devices: str) -> list[Accepted | Rejected]:
        return [Accepted(topic_for(d, Channel.RESULT), point_result(d, stream, seq)) for d in devices]

    first.write_batch(batch(1, "dev-a", "dev-m", "dev-z"))
    blocker = psycopg.connect(pg_url)
    blocker.execute("SELECT 1 FROM devices WHERE device = 'dev-m' FOR UPDATE")
    outcomes: dict[str, object] = {}

    a = writer_thread(outcomes, "a", first, batch(2, "dev-a", "dev-m", "dev-z"))
    b = writer_thread(outcomes, "b", second, batch(3, "dev-z", "dev-a"))
    try:
        a.start()
        time.sleep(0.5)  # A holds dev-a and waits for dev-m
        b.start()
        time.sleep(0.5)
        blocker.rollback()
        a.join(30)
        b.join(30)
        assert outcomes == {"a": 3, "b": 2}
    finally:
        blocker.close()
        first.close()
        second.close()


def test_two_collectors_replaying_each_others_new_devices_do_not_deadlock(pg_url: str) -> None:
    """Collector A stores results of new devices dev-a and dev-m and replays a retained status of new
    dev-z; B stores a result of dev-z and replays dev-a's status. A third client's uncommitted insert of
    dev-m holds A after dev-a. Had the retained-only devices' rows been made after the others', B would
    hold dev-z and wait for dev-a, and A, once dev-m was free, would wait for dev-z: a deadlock. In one
    device-ordered statement B waits for dev-a behind A, and both batches are stored."""
    import psycopg

    first, second = open_store(pg_url), open_store(pg_url)
    stream = "00000000000000de"
    devices = [f"{name}-{secrets.token_hex(3)}" for name in ("dev-a", "dev-m", "dev-z")]
    dev_a, dev_m, dev_z = devices

    def retained_status(device: str) -> Accepted:
        status = Status(device=device, stream=stream, seq=0, ts=1, state="online", birth=1)
        return Accepted(topic_for(device, Channel.STATUS), status, retained=True)

    def result(device: str) -> Accepted:
        return Accepted(topic_for(device, Channel.RESULT), point_result(device, stream, 1))

    blocker = psycopg.connect(pg_url)
    blocker.execute("INSERT INTO devices (device, first_seen_ns, last_seen_ns) VALUES (%s, 1, 1)", (dev_m,))
    outcomes: dict[str, object] = {}

    a = writer_thread(outcomes, "a", first, [result(dev_a), result(dev_m), retained_status(dev_z)])
    b = writer_thread(outcomes, "b", second, [result(dev_z), retained_status(dev_a)])
    try:
        a.start()
        time.sleep(0.5)  # A has inserted dev-a and waits for dev-m
        b.start()
        time.sleep(0.5)
        blocker.rollback()
        a.join(30)
        b.join(30)
        assert outcomes == {"a": 2, "b": 1}
        seen = {row["device"]: row for row in first.devices() if row["device"] in devices}
        # dev-a and dev-z each sent something fresh; a retained-only first sight is no sign of life
        assert all(seen[d]["last_seen_ns"] >= seen[d]["first_seen_ns"] for d in devices)
    finally:
        blocker.close()
        first.close()
        second.close()


def test_a_device_first_seen_in_a_retained_message_comes_alive_with_its_first_fresh_one(store: Store) -> None:
    status = Status(**envelope(0), state="offline", birth=1)
    store.write_batch([Accepted(topic_for(DEV, Channel.STATUS), status, retained=True)])
    (replayed,) = store.devices()
    assert replayed["last_seen_ns"] - replayed["first_seen_ns"] == 1
    store.write_batch([accepted(point_result(DEV, STREAM, 1))])
    (alive,) = store.devices()
    assert alive["first_seen_ns"] == replayed["first_seen_ns"]
    assert alive["last_seen_ns"] > replayed["last_seen_ns"]


def test_devices_by_name_are_picked_in_the_query(store: Store) -> None:
    names = [f"dev-{i:04d}" for i in range(620)]  # more than one query's worth of names
    store.write_batch(
        [accepted(Status(device=n, stream=STREAM, seq=0, ts=1, state="online", birth=1)) for n in names]
    )
    assert [d["device"] for d in store.devices()] == names
    wanted = [*names[600:], "dev-0003", "never-seen", "dev-0003"]
    picked = store.devices(wanted)
    assert [d["device"] for d in picked] == sorted({*names[600:], "dev-0003"})
    assert all(d["status"]["state"] == "online" for d in picked)  # decoded like devices() rows


def test_a_devices_state_columns_follow_every_change(store: Store) -> None:
    """Status and meta are decoded once per distinct text and shared: a changed column reads back
    changed, an unchanged one as the same value, and a device's value is never another's."""

    def status(device: str, state: str, birth: int) -> Accepted:
        return accepted(Status(device=device, stream=STREAM, seq=0, ts=1, state=state, birth=birth))

    store.write_batch([status("dev-a", "online", 1), status("dev-b", "online", 1)])
    first = {d["device"]: d["status"] for d in store.devices()}
    assert first["dev-a"]["state"] == first["dev-b"]["state"] == "online"
    assert first["dev-a"]["device"] == "dev-a" and first["dev-b"]["device"] == "dev-b"
    store.write_batch([status("dev-a", "busy", 2)])
    second = {d["device"]: d["status"] for d in store.devices()}
    assert second["dev-a"]["state"] == "busy" and second["dev-a"]["birth"] == 2
    assert second["dev-b"] == first["dev-b"]
    assert store.device("dev-a")["status"]["state"] == "busy"  # type: ignore[index]
