"""The broker check reads mosquitto.conf as mosquitto 2.0 does: global options, listener blocks, per-listener
authentication; and it flags what drops, expires or exposes records, or what it cannot see."""

from __future__ import annotations

import getpass
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from ctxscope.broker import free_port, mosquitto_binary
from ctxscope.collector.security.broker_check import accepts_anonymous, conf_problems, parse_conf
from ctxscope.collector.security.broker_config import (
    COLLECTOR_USER,
    COMPOSE_PATHS,
    MAX_PACKET_BYTES,
    render_mosquitto_conf,
)
from ctxscope.collector.security.options import enforce_safe_broker
from ctxscope.collector.security.site import Site
from ctxscope.shared.broker_access import BrokerAccess
from ctxscope.shared.codec import MAX_MESSAGE_BYTES
from ctxscope.shared.topics import Channel, topic_for

HOST = "127.0.0.1"
SHIPPED = render_mosquitto_conf(COMPOSE_PATHS)


def problems_of(text: str) -> str:
    return " | ".join(conf_problems(parse_conf(text)))


def test_queued_bytes_limit_and_session_expiry_are_flagged() -> None:
    """Either makes the broker throw away what it queued for an absent collector (mosquitto 2.0.11,
    max_queued_bytes 100000: 20 of 300 records delivered)."""
    problems = problems_of(SHIPPED + "max_queued_bytes 100000\npersistent_client_expiration 14d\n")
    assert "max_queued_bytes 100000: the broker silently drops queued records" in problems
    assert "persistent_client_expiration 14d: the broker deletes the collector's session" in problems
    assert "max_queued_bytes" not in problems_of(SHIPPED + "max_queued_bytes 0\n")


def test_a_plain_listener_beyond_loopback_is_flagged_beside_a_tls_one() -> None:
    plain = problems_of(SHIPPED + "listener 1883 0.0.0.0\n")
    assert "listener 1883 0.0.0.0: no TLS beyond loopback" in plain
    everywhere = problems_of(SHIPPED + "listener 1883\n")  # no bind address: every interface
    assert "listener 1883: no TLS beyond loopback" in everywhere
    # a loopback or unix-socket listener is reached from this host only (it still needs the client-id rule)
    local = SHIPPED + "listener 1883 127.0.0.1\nuse_username_as_clientid true\nlistener 0 /run/mqtt.sock\n"
    assert "TLS" not in problems_of(local)


def test_include_dir_is_reported_as_unverifiable() -> None:
    problems = problems_of(SHIPPED + "include_dir /etc/mosquitto/conf.d\n")
    assert "include_dir /etc/mosquitto/conf.d: the settings in its files are not checked" in problems


@pytest.mark.parametrize("open_first", [True, False])
def test_per_listener_anonymous_access_is_checked_listener_by_listener(open_first: bool) -> None:
    """With per_listener_settings true each listener has its own allow_anonymous: whichever comes last in
    the file, the open listener is named."""
    blocks = [
        "listener 1884 0.0.0.0\nallow_anonymous true\n",
        "listener 8883 0.0.0.0\nallow_anonymous false\npassword_file /p\nacl_file /a\n",
    ]
    text = "per_listener_settings true\n" + "".join(blocks if open_first else blocks[::-1])
    problems = problems_of(text)
    assert "listener 1884 0.0.0.0: allow_anonymous true" in problems
    assert "listener 1884 0.0.0.0: no password_file and acl_file" in problems
    assert "listener 8883 0.0.0.0: allow_anonymous" not in problems
    assert "listener 8883 0.0.0.0: no password_file" not in problems


def test_global_authentication_options_apply_wherever_they_stand() -> None:
    """Without per_listener_settings, allow_anonymous in a listener block is the broker's (the last wins)."""
    text = SHIPPED + "listener 8884 0.0.0.0\ncertfile /c\nkeyfile /k\nuse_username_as_clientid true\n"
    assert problems_of(text + "allow_anonymous true\n").startswith("allow_anonymous true: anyone who")
    assert problems_of(text) == ""


def test_a_listener_without_username_as_clientid_is_flagged() -> None:
    text = SHIPPED.replace("use_username_as_clientid true\n", "")
    assert "listener 8883 0.0.0.0: no use_username_as_clientid true: a client can connect with another" in (
        problems_of(text)
    )
    # the rule belongs to the listener it follows: given for the first only, the second is still open
    second = SHIPPED + "listener 8884 0.0.0.0\ncertfile /c\nkeyfile /k\n"
    assert "listener 8884 0.0.0.0: no use_username_as_clientid true" in problems_of(second)


def test_options_before_any_listener_make_the_default_listener() -> None:
    """mosquitto starts a default listener (port 1883, every interface) from listener options given before
    the first `listener` line; with none at all, it listens on loopback only ("local only mode")."""
    conf = parse_conf("certfile /c\nkeyfile /k\nport 8884\nlistener 1883 127.0.0.1\n")
    assert [(listener.port, listener.bind) for listener in conf.listeners] == [
        ("1883", "127.0.0.1"),
        ("8884", None),
    ]
    assert conf.listeners[1].has_tls() and not conf.listeners[0].has_tls()
    local = parse_conf("persistence true\n")
    assert [(listener.port, listener.bind) for listener in local.listeners] == [("1883", "localhost")]


def test_a_missing_or_short_message_size_limit_is_flagged() -> None:
    without = SHIPPED.replace(f"max_packet_size {MAX_PACKET_BYTES}\n", "")
    assert "no max_packet_size: one device can queue messages of up to 256 MiB" in problems_of(without)
    assert "max_packet_size 1000000: the broker disconnects a device" in problems_of(
        without + "max_packet_size 1000000\n"
    )
    assert "message_size_limit 100000: the broker silently drops records" in problems_of(
        SHIPPED + "message_size_limit 100000\n"
    )


def test_the_packet_limit_fits_the_largest_record_on_the_longest_device_topic() -> None:
    """A QoS 1 PUBLISH (MQTT 3.1.1): fixed header byte, remaining length (4 bytes past 2 MiB), topic
    length, topic, packet id, payload."""
    topic = max((topic_for("d" * 32, channel) for channel in Channel if channel is not Channel.CMD), key=len)
    assert 1 + 4 + 2 + len(topic.encode()) + 2 + MAX_MESSAGE_BYTES <= MAX_PACKET_BYTES
    assert MAX_PACKET_BYTES - MAX_MESSAGE_BYTES <= 4096  # and barely more: the limit is the contract's


def test_the_shipped_configuration_passes() -> None:
    assert conf_problems(parse_conf(SHIPPED)) == []
    assert f"max_packet_size {MAX_PACKET_BYTES}\n" in SHIPPED


@pytest.fixture
def site(tmp_path: Path) -> Site:
    site = Site(tmp_path / "site")
    site.init([HOST])
    return site


def test_the_site_configuration_does_not_vouch_for_another_broker(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """`collector run --site S --broker H:P` checks S's mosquitto.conf only if it can be the broker at
    H:P; nothing listens on either port here, so the file's verdict is all there is."""
    site_port, other_port = free_port(), free_port()
    site.write_broker_conf(site_port, HOST)
    access = site.access(COLLECTOR_USER)
    enforce_safe_broker(HOST, site_port, access, None, site.root, require=True)  # the site's broker: clean
    with pytest.raises(click.ClickException, match="is not the configuration of the broker connected to"):
        enforce_safe_broker(HOST, other_port, access, None, site.root, require=True)
    with pytest.raises(click.ClickException, match=f"no listener at 192.0.2.7:{site_port}"):
        enforce_safe_broker("192.0.2.7", site_port, access, None, site.root, require=True)
    with caplog.at_level(logging.WARNING):
        enforce_safe_broker(HOST, other_port, access, None, site.root, require=False)
    assert "UNSAFE BROKER" in caplog.text and f"no listener at {HOST}:{other_port}" in caplog.text
    # a file named with --broker-config is taken at its word (a broker behind a port mapping)
    conf = site.broker_dir / "mosquitto.conf"
    enforce_safe_broker(HOST, other_port, access, conf, None, require=True)


@pytest.fixture
def two_listener_broker(tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """A real mosquitto with per_listener_settings true: an anonymous listener, then a closed one."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    open_port, closed_port = free_port(), free_port()
    text = (
        f"per_listener_settings true\nuser {getpass.getuser()}\n"
        f"listener {open_port} {HOST}\nallow_anonymous true\n"
        f"listener {closed_port} {HOST}\nallow_anonymous false\n"
    )
    (tmp_path / "mosquitto.conf").write_text(text)
    process = subprocess.Popen(
        [binary, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while not accepts_anonymous(HOST, open_port, BrokerAccess(), timeout_s=1):
        assert process.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
        time.sleep(0.1)
    yield text, open_port, closed_port
    process.terminate()
    process.wait(10)


@pytest.mark.slow
def test_mosquitto_reads_allow_anonymous_per_listener_as_the_check_does(
    two_listener_broker: tuple[str, int, int],
) -> None:
    """The broker itself: the first listener takes anonymous clients although the file's last
    allow_anonymous is false, and the check names that listener."""
    text, open_port, closed_port = two_listener_broker
    assert accepts_anonymous(HOST, open_port, BrokerAccess())
    assert not accepts_anonymous(HOST, closed_port, BrokerAccess())
    problems = problems_of(text)
    assert f"listener {open_port} {HOST}: allow_anonymous true" in problems
    assert f"listener {closed_port} {HOST}: allow_anonymous" not in problems
