"""Check the broker the collector uses: does it let strangers in, and can it drop queued records?

Two sources, used as far as they go: a connection attempt without credentials (a broker that
accepts it is open to anyone who reaches it), and the broker's configuration file when the
collector can read it (the site's mosquitto.conf, or one named with --broker-config). MQTT itself
does not expose queue limits or persistence, so without the file those are reported as unverified.

The file is read as mosquitto 2.0 reads it: global options (the last occurrence wins), and listener
blocks, each started by a `listener` line, that own the TLS and client-id options after it and, with
`per_listener_settings true`, the authentication options too. A flat `option -> value` view would let
a second, weaker listener hide behind the first one's settings.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from ctxscope.collector.security.broker_config import MAX_PACKET_BYTES
from ctxscope.shared.broker_access import BrokerAccess, is_loopback
from ctxscope.shared.codec import MAX_MESSAGE_BYTES

SAFE_QUEUE_MIN = 100_000
SAFE_AUTOSAVE_MAX_S = 60
DEFAULT_PORT = "1883"
# Options of the listener configured last, or of the default listener before the first `listener`
# line (mosquitto.conf(5), "Listeners" and the TLS sections).
LISTENER_OPTIONS = frozenset(
    {
        "bind_interface", "cafile", "capath", "certfile", "ciphers", "ciphers_tls1.3", "crlfile",
        "dhparamfile", "http_dir", "keyfile", "max_connections", "max_qos", "max_topic_alias",
        "mount_point", "protocol", "psk_hint", "require_certificate", "socket_domain", "tls_engine",
        "tls_engine_kpass_sha1", "tls_keyform", "tls_version", "use_identity_as_username",
        "use_subject_as_username", "use_username_as_clientid",
    }
)  # fmt: skip
# The deprecated `port` and `bind_address` set the default listener wherever they stand.
DEFAULT_LISTENER_OPTIONS = frozenset({"port", "bind_address"})
# Authentication and access options: the current listener's with `per_listener_settings true`, else global.
SECURITY_OPTIONS = frozenset(
    {
        "acl_file", "allow_anonymous", "allow_zero_length_clientid", "auth_plugin", "auto_id_prefix",
        "password_file", "plugin", "psk_file",
    }
)  # fmt: skip
SECURITY_PREFIXES = ("auth_opt_", "plugin_opt_")
ANY_ADDRESS = frozenset({"0.0.0.0", "::"})


@dataclass
class Listener:
    """One listener: `listener PORT [BIND]` and the options that belong to it."""

    port: str
    bind: str | None = None  # None: every interface
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.port} {self.bind}" if self.bind else self.port

    def on_loopback(self) -> bool:
        """True when only this host can reach it: a loopback address, or a unix socket (port 0)."""
        return self.port == "0" or (self.bind is not None and is_loopback(self.bind))

    def has_tls(self) -> bool:
        return "certfile" in self.options or "psk_hint" in self.options

    def may_serve(self, host: str, port: int) -> bool:
        """False only when this listener is provably not `host:port`: another port, or a bind address
        and `host` that are both IP addresses and differ (a name may stand for any address)."""
        if self.port != str(port):
            return False
        if self.bind is None or self.bind in ANY_ADDRESS:
            return True
        try:
            return ipaddress.ip_address(self.bind) == ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return True


@dataclass
class BrokerConf:
    """A mosquitto.conf: every option's last value (what mosquitto uses for a global option), its
    listeners, and the include_dir folders whose files this check does not read."""

    options: dict[str, str] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    per_listener_settings: bool = False
    include_dirs: list[str] = field(default_factory=list)

    def __getitem__(self, option: str) -> str:
        """An option's last value, as the flat `option -> value` view had it (`conf["listener"]`)."""
        return self.options[option]

    def serves(self, host: str, port: int) -> bool:
        return any(listener.may_serve(host, port) for listener in self.listeners)


def accepts_anonymous(host: str, port: int, access: BrokerAccess, timeout_s: float = 5.0) -> bool:
    """True if the broker accepts a CONNECT without user name (over TLS when `access` uses TLS)."""
    result: list[bool] = []
    done = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"ctxscope-check-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv311,
    )  # fmt: skip
    BrokerAccess(tls=access.tls, ca_file=access.ca_file).apply(client)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        result.append(not reason.is_failure)
        done.set()

    client.on_connect = on_connect
    client.connect_timeout = timeout_s
    try:
        client.connect(host, port, keepalive=10)
    except (OSError, ValueError):
        return False
    deadline = time.monotonic() + timeout_s
    while not done.is_set() and time.monotonic() < deadline:
        if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
            break
    client.disconnect()
    return bool(result and result[0])


def _option_lines(text: str) -> list[tuple[str, str]]:
    """(option, value) for each line that is not blank or a comment, in file order."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            option, _, value = line.partition(" ")
            lines.append((option, value.strip()))
    return lines


def _is_security_option(option: str) -> bool:
    return option in SECURITY_OPTIONS or option.startswith(SECURITY_PREFIXES)


def parse_conf(text: str) -> BrokerConf:
    """mosquitto.conf as mosquitto 2.0 reads it (see the module's docstring)."""
    lines = _option_lines(text)
    # mosquitto refuses the file unless per_listener_settings comes before every option it affects
    conf = BrokerConf(per_listener_settings=dict(lines).get("per_listener_settings") == "true")
    default: dict[str, str] = {}
    current = default
    for option, value in lines:
        conf.options[option] = value
        if option == "listener":
            port, _, bind = value.partition(" ")
            conf.listeners.append(Listener(port, bind.strip() or None))
            current = conf.listeners[-1].options
        elif option == "include_dir":
            conf.include_dirs.append(value)
        elif option in DEFAULT_LISTENER_OPTIONS:
            default[option] = value
        elif option in LISTENER_OPTIONS or (conf.per_listener_settings and _is_security_option(option)):
            current[option] = value
    if default:  # any default listener option starts that listener, on every interface unless bound
        conf.listeners.append(
            Listener(default.get("port", DEFAULT_PORT), default.get("bind_address"), default)
        )
    if not conf.listeners:  # mosquitto 2.0's "local only mode"
        conf.listeners.append(Listener(DEFAULT_PORT, "localhost"))
    return conf


def _queue_problems(options: dict[str, str]) -> list[str]:
    """Settings that make the broker drop what it queued for a collector that is away."""
    problems = []
    queued = int(options.get("max_queued_messages", "1000"))
    if queued != 0 and queued < SAFE_QUEUE_MIN:
        problems.append(
            f"max_queued_messages {queued}: the broker silently drops queued records past {queued} per "
            f"client while the collector is away (use 0, or at least {SAFE_QUEUE_MIN:,})"
        )
    queued_bytes = int(options.get("max_queued_bytes", "0"))
    if queued_bytes != 0:
        problems.append(
            f"max_queued_bytes {queued_bytes}: the broker silently drops queued records past "
            f"{queued_bytes} bytes per client while the collector is away (use 0)"
        )
    if "persistent_client_expiration" in options:
        problems.append(
            f"persistent_client_expiration {options['persistent_client_expiration']}: the broker deletes "
            "the collector's session, and every record queued for it, once it has been away that long"
        )
    return problems


def _persistence_problems(options: dict[str, str]) -> list[str]:
    if options.get("persistence", "false") != "true":
        return ["persistence is off: queued records are lost when the broker restarts"]
    autosave = int(options.get("autosave_interval", "1800"))
    if autosave > SAFE_AUTOSAVE_MAX_S:
        return [
            f"autosave_interval {autosave} s: a broker crash loses up to {autosave} s of queued records "
            f"(use at most {SAFE_AUTOSAVE_MAX_S})"
        ]
    return []


def _size_problems(options: dict[str, str]) -> list[str]:
    """Message size limits: none lets one device fill the broker's memory with a few huge messages
    queued for an absent collector; one below the contract's refuses or drops records it accepts."""
    packet = int(options.get("max_packet_size", "0"))
    if packet == 0:
        return [
            "no max_packet_size: one device can queue messages of up to 256 MiB each in the broker's "
            f"memory, which the collector refuses anyway (use {MAX_PACKET_BYTES})"
        ]
    problems = []
    if packet < MAX_PACKET_BYTES:
        problems.append(
            f"max_packet_size {packet}: the broker disconnects a device that sends a record of up to "
            f"{MAX_MESSAGE_BYTES} bytes, which the collector accepts (use {MAX_PACKET_BYTES})"
        )
    payload = int(options.get("message_size_limit", "0"))
    if 0 < payload < MAX_MESSAGE_BYTES:
        problems.append(
            f"message_size_limit {payload}: the broker silently drops records of up to "
            f"{MAX_MESSAGE_BYTES} bytes, which the collector accepts (remove it)"
        )
    return problems


def _identity_problems(security: dict[str, str], where: str) -> list[str]:
    """Who gets in and what they may touch, for the broker (`where` "") or one listener."""
    problems = []
    if security.get("allow_anonymous") == "true":
        problems.append(f"{where}allow_anonymous true: anyone who reaches the broker can publish and command")
    plugin = "plugin" in security or "auth_plugin" in security
    if not plugin and ("password_file" not in security or "acl_file" not in security):
        problems.append(f"{where}no password_file and acl_file: clients are not confined to their own topics")
    return problems


def _access_problems(conf: BrokerConf) -> list[str]:
    # without per_listener_settings, the authentication options are global whichever block they stand in
    problems = [] if conf.per_listener_settings else _identity_problems(conf.options, "")
    for listener in conf.listeners:
        where = f"listener {listener.name}: "
        if conf.per_listener_settings:
            problems += _identity_problems(listener.options, where)
        if listener.options.get("use_username_as_clientid") != "true":
            problems.append(
                f"{where}no use_username_as_clientid true: a client can connect with another identity's "
                "client id and take over its session (the collector's persistent one included)"
            )
    return problems


def _tls_problems(listeners: list[Listener]) -> list[str]:
    if not any(listener.has_tls() for listener in listeners):
        return ["no TLS listener: credentials and commands cross the network in clear"]
    return [
        f"listener {listener.name}: no TLS beyond loopback: credentials and commands sent to it cross "
        "the network in clear"
        for listener in listeners
        if not listener.has_tls() and not listener.on_loopback()
    ]


def conf_problems(conf: BrokerConf) -> list[str]:
    """What in a mosquitto configuration can lose records or let strangers in (defaults of 2.0)."""
    return [
        *_queue_problems(conf.options),
        *_persistence_problems(conf.options),
        *_size_problems(conf.options),
        *_access_problems(conf),
        *_tls_problems(conf.listeners),
        # mosquitto reads these files after this one: any setting above may be overridden there
        *(
            f"include_dir {folder}: the settings in its files are not checked (unverifiable)"
            for folder in conf.include_dirs
        ),
    ]


def check_broker(
    host: str, port: int, access: BrokerAccess, config: Path | None, must_serve: bool = False
) -> list[str]:
    """Problems found with the broker; an empty list means nothing unsafe was found. With `must_serve`
    (a configuration assumed, not named: the site's), a file with no listener that can be `host:port`
    is reported as not the broker's rather than checked in its place."""
    problems = []
    if accepts_anonymous(host, port, access):
        problems.append(
            f"{host}:{port} accepts clients without credentials: anyone who reaches it can publish as any "
            "device and send commands"
        )
    if config is None:
        problems.append(
            "cannot verify the broker's queue limits and persistence: name its configuration with "
            "--broker-config (the site's broker/mosquitto.conf is used with --site)"
        )
        return problems
    try:
        text = config.read_text()
    except OSError as exc:
        return [*problems, f"cannot read the broker configuration {config}: {exc.strerror}"]
    conf = parse_conf(text)
    if must_serve and not conf.serves(host, port):
        listeners = ", ".join(listener.name for listener in conf.listeners)
        return [
            *problems,
            f"{config} is not the configuration of the broker connected to: it has no listener at "
            f"{host}:{port} (only {listeners}), so that broker's settings are unverified (name its own "
            "with --broker-config)",
        ]
    return problems + [f"{config}: {p}" for p in conf_problems(conf)]
