"""Several collector identities on the secure broker (TLS, password file, ACL from the site).

Two collectors, each its own identity (`enroll --collector`), share ingest through the site's share
group into one PostgreSQL: every record is stored exactly once. A device that subscribes to the group
under the name it can learn (the operator's `--share-group`) neither receives records nor takes any away
from the collectors; a revoked collector identity is shut out.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ctxscope.collector.ingest import Ingest
from ctxscope.collector.security.broker_config import COLLECTOR_USER
from ctxscope.collector.store import open_store
from ctxscope.shared.broker_access import BrokerAccess
from ctxscope.shared.codec import encode
from ctxscope.shared.topics import Channel, presence_collector, subscription, topic_for
from tests.support import point_result, wait_for

from .conftest import SecureBroker, collector_run, connect, stop_client

pytestmark = pytest.mark.slow
A, B = "dev-a", "dev-b"
STREAM = "00000000000000b1"
RECORDS = 300


def wait_admitted(port: int, access: BrokerAccess, admitted: bool, timeout_s: float = 10.0) -> None:
    """Wait until the broker (reloaded by SIGHUP) accepts, or refuses, `access`."""
    deadline = time.monotonic() + timeout_s
    while True:
        client, reason = connect(port, access)
        stop_client(client)
        if (reason is not None and not reason.is_failure) == admitted:
            return
        assert time.monotonic() < deadline, f"the broker still {'refuses' if admitted else 'admits'} {access}"
        time.sleep(0.2)


def test_two_collector_identities_share_ingest_and_a_device_cannot_take_records(
    secure_broker: SecureBroker, pg_url: str
) -> None:
    site, port = secure_broker.site, secure_broker.port
    added = site.add_collector("b")
    assert added.broker_reloaded and site.collectors() == [COLLECTOR_USER, added.user]
    wait_admitted(port, site.access(added.user), admitted=True)
    group = site.share_group("fleet")
    assert group.startswith("fleet-") and len(group) == len("fleet-") + 32

    stores = [open_store(pg_url), open_store(pg_url)]
    collectors = []
    for store, user in zip(stores, (COLLECTOR_USER, added.user), strict=True):
        access = site.access(user)
        ingest = Ingest(
            store, "127.0.0.1", port, user, username=access.username, password=access.password,
            tls=True, tls_ca=str(access.ca_file), share_group=group,
        )  # fmt: skip
        collectors.append(ingest)
    thief, reason = connect(port, secure_broker.device_access(A))
    assert reason is not None and not reason.is_failure
    stolen: queue.Queue[str] = queue.Queue()
    thief.on_message = lambda _c, _u, m: stolen.put(m.topic)
    granted: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
    thief.on_subscribe = lambda _c, _u, _m, reasons, _p: granted.put(reasons)
    device, reason = connect(port, secure_broker.device_access(B))
    assert reason is not None and not reason.is_failure
    try:
        for collector in collectors:
            collector.start()
            assert collector.wait_connected(10)
        # The device joins the group under the public name: mosquitto grants the subscription (its
        # acl_file checks delivery, not subscriptions), but that is another group than the collectors'.
        thief.subscribe([(f"$share/fleet/{subscription(Channel.RESULT)}", 1), ("$share/fleet/#", 1)])
        assert not any(r.is_failure for r in granted.get(timeout=10))
        for seq in range(1, RECORDS + 1):
            message = encode(point_result(B, STREAM, seq))
            device.publish(topic_for(B, Channel.RESULT), message, qos=1).wait_for_publish(10)
        wait_for(lambda: stores[0].record_count() == RECORDS, 30, "every record in the shared store")
        # a collector counts a batch once its commit returns, which the store can show first
        wait_for(lambda: sum(c.counters().stored for c in collectors) >= RECORDS, 10, "their counts")
        counters = [c.counters() for c in collectors]
        assert all(c.stored > 0 for c in counters), "the share group did not split the records"
        assert sum(c.stored for c in counters) == RECORDS
        assert sum(c.duplicates for c in counters) == 0
        assert stores[1].record_seqs(B, STREAM) == list(range(1, RECORDS + 1))
        # what every client may read is all it got: the collectors' presence (`$share/fleet/#` matches it)
        taken = [topic for topic in list(stolen.queue) if presence_collector(topic) is None]
        assert taken == [], "a device received records of the share group"
    finally:
        stop_client(thief)
        stop_client(device)
        for collector in collectors:
            collector.stop()
        for store in stores:
            store.close()

    revoked = site.access(added.user)
    removed = site.remove_collector("b")
    assert removed.broker_reloaded and site.collectors() == [COLLECTOR_USER]
    wait_admitted(port, revoked, admitted=False)
    wait_admitted(port, site.access(COLLECTOR_USER), admitted=True)


def test_collector_run_connects_as_an_added_identity_in_the_site_share_group(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """`collector run --site --collector c --share-group fleet`: the identity's own client id, the
    site's group, nothing unsafe found in the broker."""
    site = secure_broker.site
    site.add_collector("c")
    wait_admitted(secure_broker.port, site.access("ctxscope_collector_c"), admitted=True)
    args = [
        "--broker", f"127.0.0.1:{secure_broker.port}", "--site", str(site.root), "--collector", "c",
        "--share-group", "fleet", "--require-safe-broker", "--no-web",
        "--store", f"sqlite:///{tmp_path / 'c.sqlite'}",
    ]  # fmt: skip
    log = tmp_path / "collector.log"
    with collector_run(log, *args) as process:
        pass
    text = log.read_text()
    assert "collector connected" in text and "UNSAFE BROKER" not in text, text
    assert "refused" not in text, text
    assert process.returncode == 0, text


def test_why_the_group_name_is_a_secret_a_device_in_a_known_group_makes_records_vanish(
    secure_broker: SecureBroker,
) -> None:
    """The broker behaviour the site's secret guards against (mosquitto 2.0's acl_file checks delivery,
    not subscriptions): a device that joins a group under its known name is handed its turn of the
    records, the ACL refuses to deliver them, and they reach no one. If this test ever fails, the broker
    checks subscriptions and the secret is no longer needed."""
    port = secure_broker.port
    collector, _ = connect(port, secure_broker.site.access(COLLECTOR_USER))
    received: queue.Queue[str] = queue.Queue()
    collector.on_message = lambda _c, _u, m: received.put(m.topic)
    thief, _ = connect(port, secure_broker.device_access(A))
    stolen: queue.Queue[str] = queue.Queue()
    thief.on_message = lambda _c, _u, m: stolen.put(m.topic)
    device, _ = connect(port, secure_broker.device_access(B))
    known = f"$share/known/{subscription(Channel.RESULT)}"
    granted: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
    try:
        for client in (collector, thief):
            client.on_subscribe = lambda _c, _u, _m, reasons, _p: granted.put(reasons)
            client.subscribe(known, 1)
        for _ in range(2):
            assert not any(r.is_failure for r in granted.get(timeout=10))
        for seq in range(1, 101):
            message = encode(point_result(B, STREAM, seq))
            device.publish(topic_for(B, Channel.RESULT), message, qos=1).wait_for_publish(10)
        time.sleep(1.0)
        assert stolen.empty()
        assert 0 < received.qsize() < 100, f"the collector got {received.qsize()} of 100"
    finally:
        for client in (collector, thief, device):
            stop_client(client)


def test_collector_run_without_a_site_needs_the_group_secret_and_a_device_takes_nothing(
    secure_broker: SecureBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`collector run --share-group fleet` with --username/--password/--ca-file (no site) subscribes under
    `fleet-$CTXSCOPE_SHARE_GROUP_SECRET`: a device in the group named `fleet` takes none of its records
    (under the plain name it made about half vanish)."""
    site, port = secure_broker.site, secure_broker.port
    added = site.add_collector("nosite")  # an identity of its own: no session left by the tests above
    access = site.access(added.user)
    wait_admitted(port, access, admitted=True)
    monkeypatch.setenv("CTXSCOPE_PASSWORD", access.password or "")
    monkeypatch.setenv("CTXSCOPE_SHARE_GROUP_SECRET", "s" * 32)
    store_url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    args = [
        "--broker", f"127.0.0.1:{port}", "--username", added.user, "--ca-file", str(site.ca_cert),
        "--share-group", "fleet", "--no-web", "--store", store_url,
    ]  # fmt: skip
    thief, _ = connect(port, secure_broker.device_access(A))
    granted: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
    thief.on_subscribe = lambda _c, _u, _m, reasons, _p: granted.put(reasons)
    device, _ = connect(port, secure_broker.device_access(B))
    store = open_store(store_url)
    try:
        thief.subscribe(f"$share/fleet/{subscription(Channel.RESULT)}", 1)
        assert not any(r.is_failure for r in granted.get(timeout=10))
        with collector_run(tmp_path / "collector.log", *args) as process:
            assert process.poll() is None, (tmp_path / "collector.log").read_text()
            for seq in range(1, 101):
                message = encode(point_result(B, STREAM, seq))
                device.publish(topic_for(B, Channel.RESULT), message, qos=1).wait_for_publish(10)
            wait_for(lambda: store.record_count() == 100, 30, "all 100 records stored")
    finally:
        store.close()
        for client in (thief, device):
            stop_client(client)
    monkeypatch.delenv("CTXSCOPE_SHARE_GROUP_SECRET")
    with collector_run(tmp_path / "refused.log", *args) as process:
        process.wait(30)
    assert process.returncode != 0
    assert (
        "--share-group without --site needs $CTXSCOPE_SHARE_GROUP_SECRET"
        in (tmp_path / "refused.log").read_text()
    )
