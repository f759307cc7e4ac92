"""The broker's certificate is renewed before it expires, and a collector says so well before then.

The slow tests renew the certificate of a real TLS mosquitto (this module's own, see conftest.py)
while it runs: it must present the new one after the reload, and devices must connect with the
bundles they were enrolled with."""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from ctxscope.collector.cli import collector
from ctxscope.collector.ingest import Ingest
from ctxscope.collector.observability import FleetMetrics
from ctxscope.collector.security import pki
from ctxscope.collector.security.broker_config import COLLECTOR_USER
from ctxscope.collector.security.cert_watch import NS_PER_S, CertWatch
from ctxscope.collector.security.site import Site
from ctxscope.collector.store import open_store
from tests.collector.security.conftest import HOST, SecureBroker, connect, stop_client
from tests.support import wait_for

DAY_NS = 86_400 * NS_PER_S


def presented_serial(port: int, ca: Path) -> int:
    """The serial number of the certificate the broker presents to a new TLS connection."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((HOST, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def new_site(root: Path) -> Site:
    site = Site(root / "site")
    site.init([HOST, "localhost"])
    return site


def test_a_renewed_certificate_keeps_its_names_ca_and_key_mode(tmp_path: Path) -> None:
    site = new_site(tmp_path)
    before = pki.read_cert(site.broker_dir / "server.crt")
    renewed = site.renew_broker_cert(["broker.example"])
    after = pki.read_cert(site.broker_dir / "server.crt")
    ca = pki.read_cert(site.ca_cert)
    after.verify_directly_issued_by(ca)  # the agents' bundles (ca.crt) trust it as they trusted the old one
    assert after.serial_number != before.serial_number
    assert renewed.host_names == pki.host_names(after) == [HOST, "localhost", "broker.example"]
    days = (after.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).days
    assert days == pki.SERVER_DAYS - 1 and renewed.not_after == after.not_valid_after_utc
    assert stat.S_IMODE((site.broker_dir / "server.key").stat().st_mode) == 0o600
    assert not list(site.broker_dir.glob("*.new"))
    public = pki.read_key(site.broker_dir / "server.key").public_key()
    assert public.public_numbers() == after.public_key().public_numbers()  # type: ignore[union-attr]
    assert not renewed.broker_reloaded  # no broker runs for this site


def test_a_certificate_never_outlives_its_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pki, "CA_DAYS", 100)
    site = new_site(tmp_path)
    renewed = site.renew_broker_cert()
    assert renewed.not_after == renewed.ca_not_after  # 825 days would outlive the CA: clients would refuse it


def test_renewing_under_a_dying_ca_is_refused_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pki, "CA_DAYS", 0)
    site = new_site(tmp_path)
    before = (site.broker_dir / "server.crt").read_bytes()
    result = CliRunner().invoke(collector, ["renew-cert", "--site", str(site.root)])
    assert result.exit_code == 1
    assert "the site's CA expires" in result.output and "re-enroll every device" in result.output
    assert (site.broker_dir / "server.crt").read_bytes() == before


def test_the_collector_warns_once_a_day_from_30_days_before_the_end(caplog: pytest.LogCaptureFixture) -> None:
    watch = CertWatch("broker:8883")
    end = 1_900_000_000 * NS_PER_S
    watch.seen(end)  # as read from a connection
    caplog.set_level(logging.WARNING, "ctxscope.collector.security.cert_watch")
    watch.check(now_ns=end - 31 * DAY_NS)
    assert watch.health(end - 31 * DAY_NS) == {"broker_cert_expires_ns": end, "broker_cert_expiring": False}
    assert not caplog.records
    watch.check(now_ns=end - 30 * DAY_NS)
    watch.check(now_ns=end - 30 * DAY_NS + DAY_NS // 2)
    assert len(caplog.records) == 1 and "(in 30 days)" in caplog.text and "renew-cert" in caplog.text
    watch.check(now_ns=end + DAY_NS)
    assert len(caplog.records) == 2 and "EXPIRED" in caplog.records[1].getMessage()
    assert watch.health(end + DAY_NS)["broker_cert_expiring"]


@pytest.mark.slow
def test_a_running_broker_takes_the_renewed_certificate_and_devices_keep_their_bundles(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    site, port = secure_broker.site, secure_broker.port
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    access = site.access(COLLECTOR_USER)
    ingest = Ingest(
        store, HOST, port, client_id="renewal_c", username=access.username, password=access.password,
        tls=True, tls_ca=str(site.ca_cert),
    )  # fmt: skip
    ingest.start()
    try:
        assert ingest.wait_connected(10)
        old = pki.read_cert(site.broker_dir / "server.crt")
        assert presented_serial(port, site.ca_cert) == old.serial_number
        health = ingest.health()
        assert health["broker_cert_expires_ns"] == int(old.not_valid_after_utc.timestamp()) * NS_PER_S
        assert health["broker_cert_expiring"] is False
        gauges = {m.name: m for m in FleetMetrics(store, lambda: ingest).collect()}
        expiry = gauges["ctxscope_collector_broker_cert_expiry_timestamp_seconds"].samples[0].value
        assert expiry == old.not_valid_after_utc.timestamp()

        result = CliRunner().invoke(
            collector, ["renew-cert", "--site", str(site.root), "--broker-host", "broker.example"]
        )
        assert result.exit_code == 0, result.output
        assert "broker.example" in result.output and "told to reload (SIGHUP)" in result.output
        new = pki.read_cert(site.broker_dir / "server.crt")
        wait_for(lambda: presented_serial(port, site.ca_cert) == new.serial_number, 10, "the new certificate")
        for device in secure_broker.bundles:  # enrolled before the renewal, nothing copied to them since
            client, reason = connect(port, secure_broker.device_access(device), client_id=device)
            stop_client(client)
            assert reason is not None and not reason.is_failure
    finally:
        ingest.stop()
        store.close()
