"""MQTT broker helpers: probe a broker, run a private mosquitto, or an embedded amqtt fallback.

`start_private_broker()` gives the demo and tests a broker of their own without setup: a private
mosquitto (loopback only, anonymous, persistent sessions in a temporary directory, no queue limit)
when its binary exists, else the pure-Python amqtt broker in a background thread (MQTT 3.1.1 only,
~4x slower: a zero-install fallback, not for production). `ensure_broker()` is for an address the
user named: a broker answering there is used as is, else a private one is started on that port.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import paho.mqtt.client as mqtt

LOOPBACK = "127.0.0.1"
BrokerKind = Literal["external", "mosquitto", "amqtt"]


class BrokerError(RuntimeError):
    """A broker that could not be started or did not answer in time."""


def broker_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True if an MQTT broker at host:port accepts an MQTT 3.1.1 CONNECT within the timeout."""
    connected = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"ctxscope-probe-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv311,
    )  # fmt: skip

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if not getattr(reason, "is_failure", True):
            connected.set()

    client.on_connect = on_connect
    client.connect_timeout = timeout_s
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    deadline = time.monotonic() + timeout_s
    while not connected.is_set() and time.monotonic() < deadline:
        if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
            break
    client.disconnect()
    return connected.is_set()


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None
    )


def _wait_until_answers(host: str, port: int, timeout_s: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerError(f"broker on {host}:{port} exited while starting")
        if broker_answers(host, port, timeout_s=1.0):
            return
        time.sleep(0.05)
    raise BrokerError(f"broker on {host}:{port} did not answer within {timeout_s} s")


class MosquittoBroker:
    """A private mosquitto on a loopback port, with sessions persisted in `workdir` across restarts."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        binary: str | None = None,
        autosave_interval_s: int = 1,
        host: str = LOOPBACK,
    ) -> None:
        self.workdir = workdir
        self.autosave_interval_s = autosave_interval_s
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or mosquitto_binary()
        if self.binary is None:
            raise BrokerError("mosquitto is not installed")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            f"autosave_interval {self.autosave_interval_s}\n"
            # Started as root, mosquitto drops privileges to this user: keep the one that owns workdir.
            f"user {getpass.getuser()}\n"
            # A collector that is down must not lose its queued records (the default keeps 1000).
            "max_queued_messages 0\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self._write_config()
        assert self.binary is not None
        # A session of its own: a terminal's Ctrl-C (sent to the whole foreground group) must not stop
        # the broker before its owner has let the agent's last records through; the owner stops it.
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_until_answers(self.host, self.port, timeout_s, lambda: self.running)
        except BrokerError as exc:
            self.stop()  # a broker that never answered must not be left running
            raise BrokerError(f"{exc} (log: {self.workdir / 'mosquitto.log'})") from exc

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class AmqttBroker:
    """The embedded pure-Python broker (amqtt) on a loopback port, in a background thread."""

    def __init__(self, port: int | None = None) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                broker = Broker(config, loop=loop)
                loop.run_until_complete(broker.start())
            except BaseException as exc:  # reported to the starting thread
                self._failure = exc
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(broker.shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        ready.wait(timeout_s)
        if self._failure is not None:
            raise BrokerError(f"amqtt failed to start on {self.host}:{self.port}: {self._failure}")
        try:
            _wait_until_answers(self.host, self.port, timeout_s, lambda: self.running)
        except BrokerError:
            self.stop()  # a broker that never answered is not left serving in the background
            raise

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        self._thread = None
        self._loop = None


@dataclass
class BrokerHandle:
    """The broker in use: `kind` says whether it was found running or which one was started."""

    kind: BrokerKind
    host: str
    port: int
    stop: Callable[[], None]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        started = {"external": "already running", "mosquitto": "private mosquitto", "amqtt": "embedded amqtt"}
        return f"MQTT broker {self.address} ({started[self.kind]})"


def ensure_broker(host: str = LOOPBACK, port: int = 1883, workdir: Path | None = None) -> BrokerHandle:
    """Use the broker answering at host:port, else start mosquitto (or amqtt) on that loopback port."""
    if broker_answers(host, port):
        return BrokerHandle("external", host, port, lambda: None)
    if host not in (LOOPBACK, "localhost"):
        raise BrokerError(
            f"no MQTT broker answers at {host}:{port}, and brokers are started on loopback only"
        )
    return start_private_broker(port, workdir)


def start_private_broker(port: int | None = None, workdir: Path | None = None) -> BrokerHandle:
    """Start mosquitto (or amqtt) on a loopback port (default: a free one), never reusing another."""
    port = port or free_port()
    if mosquitto_binary() is not None:
        own_dir = workdir is None
        directory = workdir or Path(tempfile.mkdtemp(prefix="ctxscope-mosquitto-"))
        mosquitto = MosquittoBroker(directory, port)
        try:
            mosquitto.start()
        except BrokerError:
            if own_dir:
                shutil.rmtree(directory, ignore_errors=True)
            raise

        def stop_mosquitto() -> None:
            mosquitto.stop()
            if own_dir:
                with contextlib.suppress(OSError):
                    shutil.rmtree(directory)

        return BrokerHandle("mosquitto", LOOPBACK, port, stop_mosquitto)
    embedded = AmqttBroker(port)
    embedded.start()
    return BrokerHandle("amqtt", LOOPBACK, port, embedded.stop)
