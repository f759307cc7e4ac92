"""The broker a site's files configure, for real: it accepts the passwords that enroll hashes and refuses
wrong ones, and the host install of docs/security.md (broker/ and data/ given to user `mosquitto`,
mosquitto started as root with the site's mosquitto.conf) serves enrolled devices over TLS."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.broker import free_port, mosquitto_binary
from ctxscope.collector.security.broker_config import COLLECTOR_USER
from ctxscope.collector.security.cli import enroll, revoke
from ctxscope.compat import tomllib
from ctxscope.shared.broker_access import BrokerAccess
from tests.collector.security.conftest import DEVICES, SecureBroker, connect, stop_client

pytestmark = pytest.mark.slow


def admitted(port: int, access: BrokerAccess) -> bool | None:
    """Whether the broker accepts `access` (None: no TLS connection or no answer)."""
    client, reason = connect(port, access)
    stop_client(client)
    return None if reason is None else not reason.is_failure


def wait_admitted(port: int, access: BrokerAccess, expected: bool, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while (answer := admitted(port, access)) is not expected:
        assert time.monotonic() < deadline, f"{access.username}: the broker answered {answer}, not {expected}"
        time.sleep(0.2)


def test_the_broker_accepts_each_identitys_password_and_refuses_a_wrong_one(
    secure_broker: SecureBroker,
) -> None:
    """broker/passwd is hashed by ctxscope itself (no password on a command line): a real mosquitto must
    read it as its own."""
    port = secure_broker.port
    for access in (
        *(secure_broker.device_access(d) for d in DEVICES),
        secure_broker.site.access(COLLECTOR_USER),
    ):
        assert admitted(port, access) is True, access.username
        wrong = BrokerAccess(access.username, access.password + "x", True, access.ca_file)
        assert admitted(port, wrong) is False, access.username


def bundle_access(bundle: Path) -> BrokerAccess:
    config = tomllib.loads((bundle / "agent.toml").read_text())
    return BrokerAccess(config["username"], config["password"], True, bundle / "ca.crt")


def cli(command: object, *args: str) -> str:
    result = CliRunner().invoke(command, list(args))  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    return result.output


def as_broker_user(*command: str) -> int:
    return subprocess.run(command, user="mosquitto", capture_output=True, check=False).returncode


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A folder user `mosquitto` can pass through (pytest's tmp_path is owner-only all the way up)."""
    path = Path(tempfile.mkdtemp(prefix="ctxscope-host-install-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(
    os.geteuid() != 0 or mosquitto_binary() is None or "mosquitto" not in {u.pw_name for u in pwd.getpwall()},
    reason="the host install starts mosquitto as root, which then runs as user `mosquitto`",
)
def test_the_documented_host_install_serves_enrolled_devices(reachable_dir: Path) -> None:
    site_dir, port = reachable_dir / "site", free_port()
    site = ["--site", str(site_dir)]
    host = ["--broker-host", "127.0.0.1", "--broker-port", str(port)]
    cli(enroll, "dev-1", "--out", str(reachable_dir / "b1"), *host, *site)
    broker_dir, data_dir = site_dir / "broker", site_dir / "data"
    subprocess.run(
        ["chown", "-R", "mosquitto:", str(broker_dir), str(data_dir)], check=True
    )  # the docs' step
    binary = mosquitto_binary()
    assert binary is not None
    broker = subprocess.Popen([binary, "-c", str(broker_dir / "mosquitto.conf")], stderr=subprocess.PIPE)
    try:
        try:
            wait_admitted(port, bundle_access(reachable_dir / "b1"), True)
        except AssertionError:
            broker.kill()
            _, stderr = broker.communicate()
            log = data_dir / "mosquitto.log"
            raise AssertionError(f"{stderr.decode()} {log.read_text() if log.exists() else ''}") from None
        status = Path(f"/proc/{broker.pid}/status").read_text()
        assert f"\t{pwd.getpwnam('mosquitto').pw_uid}\t" in status.split("Uid:")[1].splitlines()[0]
        # The broker's user passes through the site, and no further than broker/ and data/.
        assert as_broker_user("cat", str(site_dir / "ca.key")) != 0
        assert as_broker_user("ls", str(site_dir)) != 0
        assert as_broker_user("ls", str(site_dir / "identities")) != 0
        # enroll and revoke, run as root as the docs say, reach the running broker.
        assert "told to reload" in cli(enroll, "dev-2", "--out", str(reachable_dir / "b2"), *host, *site)
        wait_admitted(port, bundle_access(reachable_dir / "b2"), True)
        assert "told to reload" in cli(revoke, "dev-1", *site)
        wait_admitted(port, bundle_access(reachable_dir / "b1"), False)
        assert pwd.getpwuid((broker_dir / "passwd").stat().st_uid).pw_name == "mosquitto"
    finally:
        broker.terminate()
        broker.wait(10)
