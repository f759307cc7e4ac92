"""A site's security files: CA, broker certificate, password file, ACL, identities; enroll and revoke.

Layout of a site directory (default `<state dir>/site`; mode 0711, so that a host broker's user can
pass through it to `broker/` and `data/` without listing it):

    ca.key, ca.crt               the project CA (the key never leaves this directory; owner-only)
    identities/ (0700)           the collectors' and the operator's MQTT passwords (`<user>.password`)
                                 and the secret part of every collector share group's name
    broker/                      what the broker reads (mount it as /mosquitto/config in compose):
        mosquitto.conf           for a host install (compose ships docker/mosquitto.conf)
        logrotate.conf           for a host install: caps the broker's log (data/mosquitto.log)
        ca.crt, server.crt, server.key, passwd, acl
    data/ (0700)                 a host broker's persistence (queued records) and log

Passwords are random (32 bytes, URL-safe) and stored in `broker/passwd`, hashed by this module in the
format `mosquitto_passwd` writes: a password never appears on a command line, where any local user
could read it. A device's password exists in clear only in its enrollment bundle. Revoking
removes the device from the password file; the broker applies both on SIGHUP, sent to the process
`broker/mosquitto.pid` names only if that is mosquitto running this site's mosquitto.conf (a host
install).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import os
import secrets
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from ctxscope.collector.security.broker_config import (
    COLLECTOR_USER,
    OPERATOR_USER,
    TLS_PORT,
    BrokerPaths,
    collector_user,
    is_collector_user,
    render_acl,
    render_logrotate,
    render_mosquitto_conf,
)
from ctxscope.shared.broker_access import COMMAND_USER_SUFFIX, BrokerAccess
from ctxscope.shared.ids import validate_device_id


class SiteError(RuntimeError):
    """A site operation that cannot be done; the message says why and what to do."""


SHARE_SECRET_FILE = "share-group.secret"
# mosquitto 2.0's password hash (`$7$`, src/password_mosq.c): PBKDF2-HMAC-SHA512 with a 12-byte salt and
# a 64-byte key. The broker derives the key at every connection; 101 rounds is mosquitto_passwd's
# default, and more would not slow an attacker down against passwords of 256 random bits.
PASSWORD_SALT_BYTES = 12
PASSWORD_ITERATIONS = 101


@dataclass(frozen=True)
class Enrollment:
    device: str
    bundle: Path
    broker_reloaded: bool


@dataclass(frozen=True)
class CollectorIdentity:
    user: str
    broker_reloaded: bool


@dataclass(frozen=True)
class RenewedCert:
    host_names: list[str]
    not_after: datetime.datetime
    ca_not_after: datetime.datetime
    broker_reloaded: bool


def default_hostnames() -> list[str]:
    """Names the broker certificate covers by default: this host, loopback, and compose's `broker`."""
    names = [socket.getfqdn(), socket.gethostname(), "localhost", "127.0.0.1", "::1", "broker"]
    return [n for n in dict.fromkeys(names) if n]


# Names that reach this machine only from itself: no device's bundle may point its broker at one.
LOOPBACK_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "127.0.0.1", "::1"}
)


def device_facing_hostname() -> str | None:
    """This host's name as a device on the network would reach it: its fully qualified name, else its
    host name, whichever is not a loopback name (a host whose /etc/hosts maps its name to 127.0.0.1
    has `localhost` for a fully qualified name); None when both are."""
    for name in (socket.getfqdn(), socket.gethostname()):
        if name and name.lower() not in LOOPBACK_NAMES:
            return name
    return None


def password_hash(password: str, salt: bytes | None = None, iterations: int = PASSWORD_ITERATIONS) -> str:
    """`password` as a mosquitto 2.x password file stores it: `$7$<iterations>$<salt>$<key>`, salt and
    key in standard base64 with padding (what `mosquitto_passwd` writes and the broker reads)."""
    salt = secrets.token_bytes(PASSWORD_SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker_dir = root / "broker"
        self.passwd = self.broker_dir / "passwd"
        self.ca_cert = root / "ca.crt"

    @property
    def initialized(self) -> bool:
        return (self.root / "ca.key").is_file() and self.passwd.is_file()

    # -- setup ----------------------------------------------------------------------------------

    def init(self, hostnames: list[str], port: int = TLS_PORT) -> None:
        """Create the CA, the broker's certificate, the ACL, the collector and operator identities and
        a host mosquitto.conf. Refuses to overwrite an existing site."""
        try:  # `cryptography` is needed to set a site up, not to connect
            from ctxscope.collector.security import pki
        except ImportError as exc:
            raise SiteError(f"setting up a site needs {exc.name}: pip install 'ctxscope[collector]'") from exc

        if self.initialized:
            raise SiteError(f"{self.root} already holds a site; enroll and revoke devices in it")
        self.broker_dir.mkdir(parents=True, exist_ok=True)
        # A host broker starts as root and runs as user `mosquitto`, which must pass through the root
        # to broker/ and data/ (0711: it can neither list it nor read ca.key, 0600); identities/ holds
        # secrets and data/ the broker's queue and log: owner-only (data/ is given to `mosquitto`).
        os.chmod(self.root, 0o711)
        for private in (self.root / "identities", self.root / "data"):
            private.mkdir(exist_ok=True)
            os.chmod(private, 0o700)
        ca_key, ca_cert = pki.new_ca(f"ctxscope CA {secrets.token_hex(4)}")
        pki.write_key(self.root / "ca.key", ca_key)
        pki.write_cert(self.ca_cert, ca_cert)
        pki.write_cert(self.broker_dir / "ca.crt", ca_cert)
        server_key, server_cert = pki.new_server_cert(ca_key, ca_cert, hostnames)
        pki.write_key(self.broker_dir / "server.key", server_key)
        pki.write_cert(self.broker_dir / "server.crt", server_cert)
        write_secret(self.passwd, b"")
        self._new_collector(COLLECTOR_USER)
        self._new_identity(OPERATOR_USER)
        self.write_broker_conf(port)

    def write_broker_conf(self, port: int = TLS_PORT, bind: str = "0.0.0.0") -> Path:
        """The host install's mosquitto.conf, pointing at this site's files, and the logrotate stanza
        that caps its log."""
        log_file = str(self.root / "data" / "mosquitto.log")
        paths = BrokerPaths(
            config_dir=str(self.broker_dir),
            data_dir=str(self.root / "data"),
            log_file=log_file,
            pid_file=str(self.broker_dir / "mosquitto.pid"),
        )
        conf = self.broker_dir / "mosquitto.conf"
        conf.write_text(render_mosquitto_conf(paths, port, bind))
        (self.broker_dir / "logrotate.conf").write_text(render_logrotate(log_file))
        return conf

    def renew_broker_cert(self, extra_hostnames: list[str] | None = None) -> RenewedCert:
        """Issue the broker a new certificate and key from the site's CA, for the names the current
        one covers plus `extra_hostnames`; the agents keep trusting it (same CA), so nothing is
        re-enrolled. Each file is replaced in one step, keeping its owner and mode, and the broker is
        told to reload (mosquitto 2.x rereads its certificate and key on SIGHUP)."""
        from ctxscope.collector.security import pki

        self._require_initialized()
        cert_path, key_path = self.broker_dir / "server.crt", self.broker_dir / "server.key"
        try:
            ca_key, ca_cert = pki.read_key(self.root / "ca.key"), pki.read_cert(self.ca_cert)
            names = pki.host_names(pki.read_cert(cert_path))
        except (OSError, ValueError) as exc:
            raise SiteError(f"cannot read the site's CA or broker certificate: {exc}") from exc
        now = datetime.datetime.now(datetime.timezone.utc)
        if ca_cert.not_valid_after_utc <= now + datetime.timedelta(days=1):
            raise SiteError(
                f"the site's CA expires {ca_cert.not_valid_after_utc:%Y-%m-%d}: a certificate it signs "
                "would not be trusted for long; set up a new site and re-enroll every device"
            )
        key, cert = pki.new_server_cert(ca_key, ca_cert, [*names, *(extra_hostnames or [])])
        staged = [
            (key_path.with_name("server.key.new"), key_path),
            (cert_path.with_name("server.crt.new"), cert_path),
        ]
        pki.write_key(staged[0][0], key)
        pki.write_cert(staged[1][0], cert)
        for new, old in staged:
            try:
                keep_owner_and_mode(new, old)
            except SiteError:
                for path, _ in staged:
                    path.unlink(missing_ok=True)
                raise
        for new, old in staged:
            os.replace(new, old)
        return RenewedCert(
            pki.host_names(cert), cert.not_valid_after_utc, ca_cert.not_valid_after_utc, self.reload_broker()
        )

    def _new_collector(self, user: str) -> None:
        """A collector identity: its ingest user and its command publisher (`_cmd`) share one password;
        the ACL is written anew for the site's collectors, and the share-group secret made if absent."""
        password = self._new_identity(user)
        self._set_password(user + COMMAND_USER_SUFFIX, password)
        secret = self.root / "identities" / SHARE_SECRET_FILE
        if not secret.is_file():
            write_secret(secret, secrets.token_hex(16).encode())
        self._write_acl()

    def _write_acl(self) -> None:
        (self.broker_dir / "acl").write_text(render_acl(self.collectors()))

    def _new_identity(self, user: str) -> str:
        password = secrets.token_urlsafe(32)
        write_secret(self.root / "identities" / f"{user}.password", password.encode())
        self._set_password(user, password)
        return password

    def _set_password(self, user: str, password: str) -> None:
        # Hashed here, not by `mosquitto_passwd -b`, which takes the password on its command line: any
        # local user who reads the process list (/proc/*/cmdline) would see it.
        self._write_passwd([*self._passwd_lines(without={user}), f"{user}:{password_hash(password)}"])

    def _remove_users(self, *users: str) -> None:
        self._write_passwd(self._passwd_lines(without=set(users)))

    def _passwd_lines(self, without: set[str]) -> list[str]:
        lines = self.passwd.read_text().splitlines()
        return [line for line in lines if line.split(":", 1)[0] not in without]

    def _write_passwd(self, lines: list[str]) -> None:
        """Replace broker/passwd in one step (a broker reloading meanwhile reads the old or the new file,
        never half of one), keeping its owner and mode: the broker's user must still read it."""
        staged = self.passwd.with_name("passwd.new")
        write_secret(staged, "".join(line + "\n" for line in lines).encode())
        try:
            keep_owner_and_mode(staged, self.passwd)
        except SiteError:
            staged.unlink()
            raise
        os.replace(staged, self.passwd)

    # -- identities -----------------------------------------------------------------------------

    def users(self) -> set[str]:
        if not self.passwd.is_file():
            return set()
        lines = self.passwd.read_text().splitlines()
        return {line.split(":", 1)[0] for line in lines if ":" in line}

    def devices(self) -> list[str]:
        return sorted(u for u in self.users() if not u.startswith("ctxscope_"))

    def collectors(self) -> list[str]:
        """The collector identities' ingest users, the site's first one first."""
        found = (u for u in self.users() if is_collector_user(u))
        return sorted(found, key=lambda u: (u != COLLECTOR_USER, u))

    def add_collector(self, name: str) -> CollectorIdentity:
        """Another collector identity, `ctxscope_collector_<name>`, for one more collector of a share
        group (the broker gives every connection of one user the same client id, so each collector
        needs its own)."""
        self._require_initialized()
        user = self._collector_user(name)
        if user in self.users():
            raise SiteError(f"collector identity {user!r} already exists; revoke it first to make it anew")
        self._new_collector(user)
        return CollectorIdentity(user, self.reload_broker())

    def remove_collector(self, name: str) -> CollectorIdentity:
        """Remove an added collector identity (its password, its `_cmd` user and its ACL lines)."""
        self._require_initialized()
        user = self._collector_user(name)
        if user not in self.users():
            others = ", ".join(c for c in self.collectors() if c != COLLECTOR_USER) or "none"
            raise SiteError(f"no collector identity {user!r} in {self.root} (added ones: {others})")
        self._remove_users(user, user + COMMAND_USER_SUFFIX)
        (self.root / "identities" / f"{user}.password").unlink(missing_ok=True)
        self._write_acl()
        return CollectorIdentity(user, self.reload_broker())

    @staticmethod
    def _collector_user(name: str) -> str:
        try:
            return collector_user(name)
        except ValueError as exc:
            raise SiteError(str(exc)) from exc

    def share_group(self, name: str) -> str:
        """The share group as the collectors subscribe to it: `NAME-<site secret>`.

        mosquitto's acl_file does not check subscriptions, and a client that joins a group but may not
        read its topics makes the broker drop the records it hands that client: a device that knew a
        group's name could take a share of the fleet's records away from the collectors. The secret,
        readable by collector identities only, keeps the name out of the devices' reach."""
        path = self.root / "identities" / SHARE_SECRET_FILE
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise SiteError(
                f"site {self.root} has no share-group secret ({exc.strerror}): "
                "`ctxscope collector enroll --collector NAME` makes one with the second collector identity"
            ) from exc
        return f"{name}-{secret}"

    def access(self, user: str) -> BrokerAccess:
        """Credentials of the collector or operator identity, trusting the site's CA."""
        path = self.root / "identities" / f"{user}.password"
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise SiteError(f"no identity {user!r} in site {self.root}: {exc.strerror}") from exc
        return BrokerAccess(username=user, password=password, tls=True, ca_file=self.ca_cert)

    def enroll(
        self,
        device: str,
        out: Path,
        broker_host: str,
        broker_port: int = TLS_PORT,
        device_dir: str = "/etc/ctxscope",
    ) -> Enrollment:
        """Give `device` a password and write its bundle (agent.toml + ca.crt) into `out`."""
        validate_device_id(device)
        self._require_initialized()
        if device in self.users():
            raise SiteError(
                f"device {device!r} is already enrolled; revoke it first to issue new credentials"
            )
        if out.exists() and any(out.iterdir()):
            raise SiteError(f"{out} is not empty; choose a new folder for the bundle")
        password = secrets.token_urlsafe(32)
        out.mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o700)
        shutil.copyfile(self.ca_cert, out / "ca.crt")
        write_secret(
            out / "agent.toml", agent_toml(device, password, broker_host, broker_port, device_dir).encode()
        )
        self._set_password(device, password)
        self._write_acl()  # derived from the site's identities: a site made by an older version gets today's
        return Enrollment(device, out, self.reload_broker())

    def revoke(self, device: str) -> bool:
        """Remove the device's credentials; returns whether a running broker was told to reload."""
        validate_device_id(device)
        self._require_initialized()
        if device not in self.users():
            enrolled = ", ".join(self.devices()) or "none"
            raise SiteError(f"device {device!r} is not enrolled in {self.root} (enrolled: {enrolled})")
        self._remove_users(device)
        self._write_acl()
        return self.reload_broker()

    def require_certified(self, broker_host: str) -> None:
        """Refuse a broker address the broker's certificate does not name: a device given it in its
        bundle would refuse the broker (certificate verify failed)."""
        from ctxscope.collector.security import pki

        self._require_initialized()
        try:
            cert = pki.read_cert(self.broker_dir / "server.crt")
        except (OSError, ValueError) as exc:
            raise SiteError(f"cannot read the broker's certificate: {exc}") from exc
        if not pki.covers(cert, broker_host):
            raise SiteError(
                f"the broker's certificate does not name {broker_host!r} (it covers "
                f"{', '.join(pki.host_names(cert))}), so the device would refuse the broker: add the name "
                f"with `ctxscope collector renew-cert --broker-host {broker_host} --site {self.root}` "
                "(enrolled devices keep their bundles), then enroll again"
            )

    def reload_broker(self) -> bool:
        """SIGHUP the broker named by broker/mosquitto.pid, if that is this site's: it rereads passwd,
        acl and its certificate. Returns whether it was signalled."""
        try:
            pid = int((self.broker_dir / "mosquitto.pid").read_text().strip())
        except (OSError, ValueError):
            return False
        # A broker that crashed left its pid file behind, and the pid may belong to any process by now.
        if not self._runs_site_broker(pid):
            return False
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            return False
        return True

    def _runs_site_broker(self, pid: int) -> bool:
        """Whether process `pid` is mosquitto started with this site's mosquitto.conf (`-c FILE` or
        `--config-file FILE`; a relative FILE is taken from the process's working directory)."""
        proc = Path("/proc", str(pid))
        try:
            args = [os.fsdecode(arg) for arg in (proc / "cmdline").read_bytes().split(b"\0")]
        except OSError:  # no such process, or no /proc: nothing shows it is the broker
            return False
        if Path(args[0]).name != "mosquitto":
            return False
        configs = [value for flag, value in itertools.pairwise(args) if flag in ("-c", "--config-file")]
        if not configs:
            return False
        try:  # mosquitto rereads the last one on SIGHUP
            return os.path.samefile(proc / "cwd" / configs[-1], self.broker_dir / "mosquitto.conf")
        except OSError:
            return False

    def _require_initialized(self) -> None:
        if not self.initialized:
            raise SiteError(f"{self.root} holds no site yet: `ctxscope collector enroll` creates one")


def write_secret(path: Path, data: bytes) -> None:
    """Write a file created owner-only (never world-readable, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def keep_owner_and_mode(new: Path, old: Path) -> None:
    """Give `new`, about to replace `old`, the old file's mode and owner: the broker's user must still
    read it (a host install gives broker/ to `mosquitto`, compose to uid 1883)."""
    try:
        kept = os.stat(old)
        os.chmod(new, kept.st_mode & 0o777)
        if (kept.st_uid, kept.st_gid) != (os.getuid(), os.getgid()):
            os.chown(new, kept.st_uid, kept.st_gid)
    except OSError as exc:
        raise SiteError(
            f"cannot give the new {old.name} the old one's owner and mode ({exc.strerror}): "
            f"run this as root or as the owner of {old}"
        ) from exc


def agent_toml(device: str, password: str, broker_host: str, broker_port: int, device_dir: str) -> str:
    """The agent configuration of an enrolled device (TOML strings quoted by repr-safe rules)."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (
        f"# ctxscope agent configuration for {device}, written by `ctxscope collector enroll`.\n"
        f"# Copy this folder to {device_dir}/ on the device (keep agent.toml readable by the agent only).\n"
        f"device = {quoted(device)}\n"
        f"broker_host = {quoted(broker_host)}\n"
        f"broker_port = {broker_port}\n"
        f"username = {quoted(device)}\n"
        f"password = {quoted(password)}\n"
        "tls = true\n"
        f"tls_ca = {quoted(device_dir.rstrip('/') + '/ca.crt')}\n"
    )
