"""Topic builder/parser and device-id rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxscope.shared.ids import InvalidIdentifier, device_id_from_hostname, validate_device_id
from ctxscope.shared.topics import Channel, InvalidTopic, command_topic, parse_topic, subscription, topic_for


@given(
    st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True),
    st.sampled_from([c for c in Channel if c is not Channel.CMD]),
)
def test_data_topics_round_trip(device: str, channel: Channel) -> None:
    parsed = parse_topic(topic_for(device, channel))
    assert (parsed.device, parsed.channel, parsed.command) == (device, channel, None)


def test_command_topics_round_trip() -> None:
    topic = command_topic("orin-nano-1", "run_plan")
    assert topic == "ctxscope/v1/orin-nano-1/cmd/run_plan"
    parsed = parse_topic(topic)
    assert (parsed.channel, parsed.command) == (Channel.CMD, "run_plan")


@pytest.mark.parametrize(
    "topic",
    [
        "ctxscope/v2/dev/status",
        "other/v1/dev/status",
        "ctxscope/v1/Dev/status",
        "ctxscope/v1/dev/unknown",
        "ctxscope/v1/dev/status/extra",
        "ctxscope/v1/dev/cmd",
        "ctxscope/v1/dev/cmd/a/b",
        "ctxscope/v1/" + "a" * 33 + "/status",
        "ctxscope/v1",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_topic(topic)


def test_subscriptions() -> None:
    assert subscription() == "ctxscope/v1/+/#"
    assert subscription(Channel.CMD, device="d1") == "ctxscope/v1/d1/cmd/+"
    assert subscription(Channel.RESULT) == "ctxscope/v1/+/result"


@pytest.mark.parametrize("bad", ["", "UPPER", "with space", "a" * 33, "dots.not.allowed", "slash/no"])
def test_device_ids_are_validated(bad: str) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_device_id(bad)


@given(st.text(max_size=80))
def test_any_hostname_maps_to_a_valid_device_id(hostname: str) -> None:
    validate_device_id(device_id_from_hostname(hostname))
