"""`ctxscope collector enroll` and `revoke`: the site, the bundle, and clear refusals."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from ctxscope.agent.config import load_config
from ctxscope.collector.security.cli import enroll, revoke
from ctxscope.collector.security.site import Site


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
