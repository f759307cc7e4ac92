"""docs/protocol.md documents every message kind and every topic channel."""

from __future__ import annotations

from pathlib import Path

from ctxscope.shared.messages import CHANNEL_OF_KIND
from ctxscope.shared.topics import Channel

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def test_every_kind_has_a_section() -> None:
    missing = [kind for kind in CHANNEL_OF_KIND if f"### {kind}\n" not in DOC]
    assert not missing, f"docs/protocol.md lacks sections for {missing}"


def test_every_channel_is_in_the_topic_table() -> None:
    missing = [c.value for c in Channel if f"ctxscope/v1/<device>/{c.value}" not in DOC]
    assert not missing
