"""Identifier rules shared by topics, client ids and message envelopes."""

from __future__ import annotations

import re
import secrets

DEVICE_ID_PATTERN = re.compile(r"^[a-z0-9-]{1,32}$")
STREAM_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")


class InvalidIdentifier(ValueError):
    """An identifier that breaks the contract's rules."""


def validate_device_id(device: str) -> str:
    """Return `device` if it is 1-32 characters of a-z, 0-9 and '-', else raise InvalidIdentifier."""
    if not DEVICE_ID_PATTERN.fullmatch(device):
        raise InvalidIdentifier(
            f"device id {device!r} is invalid: use 1-32 characters of lowercase a-z, 0-9 and '-'"
        )
    return device


def device_id_from_hostname(hostname: str) -> str:
    """Derive a valid device id from a host name (lowercased, other characters become '-')."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-")[:32].strip("-")
    return cleaned or "device"


def new_stream_id() -> str:
    """A random 64-bit stream id (16 hex digits) that names one agent spool for its whole life."""
    return secrets.token_hex(8)
