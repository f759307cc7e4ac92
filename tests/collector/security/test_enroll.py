"""`ctxscope collector enroll` and `revoke`: the site, the bundle, and clear refusals."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509

from ctxscope.agent.config import load_config
from ctxscope.collector.security.cli import enroll, renew_cert, revoke
from ctxscope.collector.security.site import PASSWORD_ITERATIONS, Site, password_hash
from tests.support import wait_for


def invoke(command: object, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(command, list(args))  # type: ignore[arg-type]
    return result.exit_code, result.output


def test_enroll_makes_a_site_and_a_bundle_the_agent_loads(tmp_path: Path) -> None:
    site_dir, bundle = tmp_path / "site", tmp_path / "bundle"
    code, out = invoke(
        enroll, "orin-01", "--out", str(bundle), "--broker-host", "collector.lan", "--site", str(site_dir)
    )
    assert code == 0, out
    config = load_config(bundle / "agent.toml", environ={})
    assert (config.device, config.username, config.broker_host, config.broker_port) == (
        "orin-01", "orin-01", "collector.lan", 8883,
    )  # fmt: skip
    assert config.tls and config.tls_ca == Path("/etc/ctxscope/ca.crt") and config.password
    assert stat.S_IMODE((bundle / "agent.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE((site_dir / "ca.key").stat().st_mode) == 0o600
    assert (bundle / "ca.crt").read_bytes() == (site_dir / "ca.crt").read_bytes()
    server = x509.load_pem_x509_certificate((site_dir / "broker" / "server.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"collector.lan", "broker", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    site = Site(site_dir)
    assert site.devices() == ["orin-01"]
    assert {"ctxscope_collector", "ctxscope_collector_cmd", "ctxscope_operator"} <= site.users()
    assert config.password not in (site_dir / "broker" / "passwd").read_text()  # stored hashed


@pytest.mark.parametrize(
    ("fqdn", "hostname", "expected"),
    [
        ("localhost", "vm", "vm"),
        ("lab-7.example.org", "lab-7", "lab-7.example.org"),
        ("localhost", "localhost", None),
    ],
)
def test_a_bundle_never_points_a_device_at_a_loopback_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fqdn: str, hostname: str, expected: str | None
) -> None:
    """A host whose /etc/hosts maps its name to 127.0.0.1 has `localhost` for a fully qualified name:
    without --broker-host the bundle takes the host name instead, or enroll asks for --broker-host."""
    monkeypatch.setattr("socket.getfqdn", lambda *_: fqdn)
    monkeypatch.setattr("socket.gethostname", lambda: hostname)
    bundle = tmp_path / "bundle"
    code, out = invoke(enroll, "orin-01", "--out", str(bundle), "--site", str(tmp_path / "site"))
    if expected is None:
        assert code == 2 and "pass --broker-host" in out, out
        assert not bundle.exists()
        return
    assert code == 0, out
    assert f"enrolled orin-01 (broker {expected}:8883)" in out
    assert load_config(bundle / "agent.toml", environ={}).broker_host == expected


def test_enroll_and_revoke_refuse_clearly(tmp_path: Path) -> None:
    site = ["--site", str(tmp_path / "site")]
    assert invoke(enroll, "dev-1", "--out", str(tmp_path / "b1"), *site)[0] == 0
    code, out = invoke(enroll, "dev-1", "--out", str(tmp_path / "b2"), *site)
    assert code != 0 and "already enrolled; revoke it first" in out
    code, out = invoke(enroll, "dev-2", "--out", str(tmp_path / "b1"), *site)
    assert code != 0 and "is not empty" in out
    code, out = invoke(enroll, "Bad_Id", "--out", str(tmp_path / "b3"), *site)
    assert code != 0 and "device id 'Bad_Id' is invalid" in out
    code, out = invoke(revoke, "dev-1", *site)
    assert code == 0 and "revoked dev-1" in out and "kill -HUP" in out
    assert Site(tmp_path / "site").devices() == []
    code, out = invoke(revoke, "dev-1", *site)
    assert code != 0 and "not enrolled" in out
    code, out = invoke(revoke, "dev-9", "--site", str(tmp_path / "empty"))
    assert code != 0 and "holds no site yet" in out


def test_collector_identities_are_added_and_revoked_with_their_acl(tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    site = ["--site", str(site_dir)]
    code, out = invoke(enroll, "--collector", "b", *site)
    assert code == 0 and "added collector identity ctxscope_collector_b" in out, out
    users = Site(site_dir).users()
    assert {"ctxscope_collector_b", "ctxscope_collector_b_cmd"} <= users
    assert Site(site_dir).collectors() == ["ctxscope_collector", "ctxscope_collector_b"]
    assert Site(site_dir).devices() == []
    acl = (site_dir / "broker" / "acl").read_text()
    for user in ("ctxscope_collector_b", "ctxscope_collector_b_cmd"):
        assert f"user {user}\ntopic read ctxscope/v1/#\ntopic write ctxscope/v1/+/cmd/+\n" in acl
    secret = site_dir / "identities" / "share-group.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert Site(site_dir).share_group("fleet") == f"fleet-{secret.read_text()}"
    code, out = invoke(enroll, "--collector", "b", *site)
    assert code != 0 and "already exists" in out
    for bad in ("cmd", "B", "a_b"):
        code, out = invoke(enroll, "--collector", bad, *site)
        assert code != 0 and f"collector name {bad!r} is invalid" in out
    code, out = invoke(enroll, "dev-1", "--collector", "c", "--out", str(tmp_path / "b"), *site)
    assert code != 0 and "either a DEVICE or --collector NAME" in out
    code, out = invoke(enroll, "dev-1", *site)
    assert code != 0 and "needs --out" in out
    code, out = invoke(revoke, "--collector", "b", *site)
    assert code == 0 and "revoked collector identity ctxscope_collector_b" in out
    assert "ctxscope_collector_b" not in (site_dir / "broker" / "acl").read_text()
    assert Site(site_dir).collectors() == ["ctxscope_collector"]
    code, out = invoke(revoke, "--collector", "b", *site)
    assert code != 0 and "no collector identity 'ctxscope_collector_b'" in out


def test_a_bad_share_group_name_is_refused_without_printing_the_site_secret(tmp_path: Path) -> None:
    from ctxscope.collector.run import run

    site_dir = tmp_path / "site"
    assert invoke(enroll, "--collector", "b", "--site", str(site_dir))[0] == 0
    secret = (site_dir / "identities" / "share-group.secret").read_text()
    for bad in ("a/b", "x" * 65):
        code, out = invoke(run, "--site", str(site_dir), "--share-group", bad, "--no-web")
        assert code != 0 and f"share group {bad!r}" in out and secret not in out


def test_enrolling_brings_an_older_sites_acl_up_to_date(tmp_path: Path) -> None:
    """The ACL is derived from the site's identities: one written before collectors announced their
    presence lacks those lines, and the next enroll writes them (the broker rereads it on SIGHUP)."""
    site_dir = tmp_path / "site"
    assert invoke(enroll, "orin-01", "--out", str(tmp_path / "b1"), "--site", str(site_dir))[0] == 0
    acl = site_dir / "broker" / "acl"
    current = acl.read_text()
    assert "topic write ctxscope/presence/v1/ctxscope_collector\n" in current
    assert "pattern read ctxscope/presence/v1/+\n" in current
    acl.write_text("\n".join(line for line in current.splitlines() if "presence" not in line) + "\n")
    assert invoke(enroll, "orin-02", "--out", str(tmp_path / "b2"), "--site", str(site_dir))[0] == 0
    assert acl.read_text() == current


def test_no_password_is_ever_on_a_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any local user can read every process's command line (/proc/*/cmdline): making a site, enrolling
    and revoking must start no process that is given a password."""
    command_lines: list[str] = []

    class Recorded(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, args: Any, *rest: Any, **options: Any) -> None:
            command_lines.append(" ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args))
            super().__init__(args, *rest, **options)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    site_dir, site = tmp_path / "site", ["--site", str(tmp_path / "site")]
    assert invoke(enroll, "dev-1", "--out", str(tmp_path / "b1"), *site)[0] == 0
    assert invoke(enroll, "--collector", "b", *site)[0] == 0
    assert invoke(revoke, "dev-1", *site)[0] == 0
    passwords = [load_config(tmp_path / "b1" / "agent.toml", environ={}).password]
    passwords += [p.read_text().strip() for p in (site_dir / "identities").glob("*.password")]
    assert len(passwords) == 4 and all(passwords)
    assert not [line for line in command_lines for p in passwords if p in line]


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_passwords_are_hashed_exactly_as_mosquitto_passwd_hashes_them(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.touch()
    secret = "a password, not a real one: ü$:"
    subprocess.run(["mosquitto_passwd", "-b", str(reference), "someone", secret], check=True)
    user, stored = reference.read_text().strip().split(":", 1)
    _, kind, iterations, salt, _ = stored.split("$")
    assert (user, kind, int(iterations)) == ("someone", "7", PASSWORD_ITERATIONS)
    assert password_hash(secret, base64.b64decode(salt), int(iterations)) == stored
    assert password_hash(secret) != password_hash(secret)  # a new salt each time
    site = Site(tmp_path / "site")
    site.init(["localhost"])
    site.enroll("dev-1", tmp_path / "bundle", "localhost")
    for line in site.passwd.read_text().splitlines():
        assert re.fullmatch(r"[a-z0-9_-]+:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", line), line


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the broker's files to another user needs root")
def test_passwd_keeps_its_owner_and_mode_through_enroll_and_revoke(tmp_path: Path) -> None:
    """A host install gives broker/ to the broker's user: the password file that enroll and revoke write
    anew must stay that user's, and owner-only."""
    site = Site(tmp_path / "site")
    site.init(["localhost"])
    os.chown(site.passwd, 4242, 4343)
    site.enroll("dev-1", tmp_path / "bundle", "localhost")
    add = site.add_collector("b")
    site.revoke("dev-1")
    site.remove_collector("b")
    kept = site.passwd.stat()
    assert (kept.st_uid, kept.st_gid, stat.S_IMODE(kept.st_mode)) == (4242, 4343, 0o600)
    assert not add.broker_reloaded and not list(site.broker_dir.glob("passwd.*"))
    assert site.users() == {"ctxscope_collector", "ctxscope_collector_cmd", "ctxscope_operator"}


def test_the_site_lets_a_broker_user_through_and_keeps_its_secrets_private(tmp_path: Path) -> None:
    """A host broker runs as user `mosquitto`: it must pass through the site's folder to broker/ and
    data/, and must not reach the CA key or the identities."""
    site = Site(tmp_path / "site")
    site.init(["localhost"])
    mode = {p: stat.S_IMODE((site.root / p).stat().st_mode) for p in ("", "identities", "data", "ca.key")}
    assert mode == {"": 0o711, "identities": 0o700, "data": 0o700, "ca.key": 0o600}
    secrets = [site.passwd, site.broker_dir / "server.key", *(site.root / "identities").iterdir()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in secrets} == {0o600}


def test_enroll_refuses_a_broker_host_the_certificate_does_not_name(tmp_path: Path) -> None:
    """The device checks the broker's certificate against the address in its bundle: a bundle for a
    name the certificate lacks could never connect (CERTIFICATE_VERIFY_FAILED)."""
    site_dir, bundle = tmp_path / "site", tmp_path / "b2"
    site = ["--site", str(site_dir)]
    code, out = invoke(
        enroll, "dev-1", "--out", str(tmp_path / "b1"), "--broker-host", "collector.lan", *site
    )
    assert code == 0, out
    code, out = invoke(enroll, "dev-2", "--out", str(bundle), "--broker-host", "other.lan", *site)
    assert code != 0 and "does not name 'other.lan'" in out and "collector.lan" in out, out
    assert f"renew-cert --broker-host other.lan --site {site_dir}" in out
    assert not bundle.exists() and Site(site_dir).devices() == ["dev-1"]
    # Names in any case, addresses in any spelling (the site was made on this host: loopback is named).
    for n, covered in enumerate(("COLLECTOR.lan", "0:0::1", "127.0.0.1")):
        code, out = invoke(
            enroll, f"dev-c{n}", "--out", str(tmp_path / f"c{n}"), "--broker-host", covered, *site
        )
        assert code == 0, out
    assert invoke(renew_cert, "--broker-host", "other.lan", *site)[0] == 0
    code, out = invoke(enroll, "dev-2", "--out", str(bundle), "--broker-host", "other.lan", *site)
    assert code == 0, out


def test_reload_signals_no_process_but_this_sites_mosquitto(tmp_path: Path) -> None:
    """A pid file left by a crashed broker may name any process by now: enroll and revoke signal it
    only if it is mosquitto running this site's mosquitto.conf, and otherwise say it was not reloaded."""
    site_dir, site = tmp_path / "site", ["--site", str(tmp_path / "site")]
    assert invoke(enroll, "dev-1", "--out", str(tmp_path / "b1"), *site)[0] == 0
    broker_dir = site_dir / "broker"
    conf = broker_dir / "mosquitto.conf"
    hup_seen, ready = tmp_path / "hup-seen", tmp_path / "ready"
    ready.mkdir()
    # A stand-in for mosquitto: a program called `mosquitto` that notes a SIGHUP in a file.
    stand_in = tmp_path / "bin" / "mosquitto"
    stand_in.parent.mkdir()
    stand_in.symlink_to(sys.executable)
    script = tmp_path / "stand_in.py"
    script.write_text(
        "import os, signal, time\n"
        f"signal.signal(signal.SIGHUP, lambda *_: open({str(hup_seen)!r}, 'a').write('hup'))\n"
        f"open(os.path.join({str(ready)!r}, str(os.getpid())), 'w').close()\n"
        "time.sleep(60)\n"
    )
    strangers = [
        subprocess.Popen(["sleep", "60"]),  # not mosquitto
        subprocess.Popen([str(stand_in), str(script), "-c", str(tmp_path / "other.conf")]),  # another config
    ]
    ours = subprocess.Popen([str(stand_in), str(script), "-c", "mosquitto.conf"], cwd=broker_dir)
    try:
        wait_for(lambda: len(list(ready.iterdir())) == 2, 30, "the stand-ins to handle SIGHUP")
        for stranger in strangers:
            (broker_dir / "mosquitto.pid").write_text(f"{stranger.pid}\n")
            code, out = invoke(revoke, "dev-1", *site)
            assert code == 0 and "NOT reloaded" in out and f"pgrep -f 'mosquitto -c {conf}'" in out, out
            assert stranger.poll() is None and not hup_seen.exists()
            assert invoke(enroll, "dev-1", "--out", str(tmp_path / f"b-{stranger.pid}"), *site)[0] == 0
        (broker_dir / "mosquitto.pid").write_text(f"{ours.pid}\n")
        code, out = invoke(revoke, "dev-1", *site)  # a relative -c is read from the broker's folder
        assert code == 0 and "the broker was told to reload (SIGHUP)" in out, out
        wait_for(hup_seen.exists, 5, "the SIGHUP")
    finally:
        for process in (*strangers, ours):
            process.kill()
            process.wait()
