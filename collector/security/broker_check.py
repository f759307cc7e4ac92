"""Check the broker the collector uses: does it let strangers in, and can it drop queued records?

Two sources, used as far as they go: a connection attempt without credentials (a broker that
accepts it is open to anyone who reaches it), and the broker's configuration file when the
collector can read it (the site's mosquitto.conf, or one named with --broker-config). MQTT itself
does not expose queue limits or persistence, so without the file those are reported as unverified.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

from ctxscope.shared.broker_access import BrokerAccess

SAFE_QUEUE_MIN = 100_000
SAFE_AUTOSAVE_MAX_S = 60


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


def parse_conf(text: str) -> dict[str, str]:
    """mosquitto.conf as `option -> value` (the last occurrence wins, as for mosquitto's globals)."""
    settings: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        option, _, value = line.partition(" ")
        settings[option] = value.strip()
    return settings


def conf_problems(settings: dict[str, str]) -> list[str]:
    """What in a mosquitto configuration can lose records or let strangers in (defaults of 2.0)."""
    problems = []
    queued = int(settings.get("max_queued_messages", "1000"))
    if queued != 0 and queued < SAFE_QUEUE_MIN:
        problems.append(
            f"max_queued_messages {queued}: the broker silently drops queued records past {queued} per "
            f"client while the collector is away (use 0, or at least {SAFE_QUEUE_MIN:,})"
        )
    if settings.get("persistence", "false") != "true":
        problems.append("persistence is off: queued records are lost when the broker restarts")
    autosave = int(settings.get("autosave_interval", "1800"))
    if settings.get("persistence") == "true" and autosave > SAFE_AUTOSAVE_MAX_S:
        problems.append(
            f"autosave_interval {autosave} s: a broker crash loses up to {autosave} s of queued records "
            f"(use at most {SAFE_AUTOSAVE_MAX_S})"
        )
    if settings.get("allow_anonymous") == "true":
        problems.append("allow_anonymous true: anyone who reaches the broker can publish and command")
    if "plugin" not in settings and ("password_file" not in settings or "acl_file" not in settings):
        problems.append("no password_file and acl_file: clients are not confined to their own topics")
    if "certfile" not in settings:
        problems.append("no TLS listener: credentials and commands cross the network in clear")
    return problems


def check_broker(host: str, port: int, access: BrokerAccess, config: Path | None) -> list[str]:
    """Problems found with the broker; an empty list means nothing unsafe was found."""
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
    return problems + [f"{config}: {p}" for p in conf_problems(parse_conf(text))]
