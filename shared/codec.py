"""msgpack codec for contract messages, with bounded decoding and typed errors."""

from __future__ import annotations

from typing import Any

import msgpack
from pydantic import ValidationError

from ctxscope.shared.messages import MESSAGE_ADAPTER, Message

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class DecodeError(ValueError):
    """Bytes that are not a valid contract message; `reason` is a short machine-friendly tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(message: Message) -> bytes:
    """Serialize a message to msgpack (bytes stay binary, no JSON detour)."""
    return msgpack.packb(message.model_dump(mode="python"), use_bin_type=True)


def decode(payload: bytes) -> Message:
    """Parse and validate bytes into a message; raise DecodeError with a reason otherwise."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(payload)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        raw: Any = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # corrupt input raises all three
        raise DecodeError("not_msgpack", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(raw, dict):
        raise DecodeError("not_a_map", f"top level is {type(raw).__name__}")
    version = raw.get("v")
    if version != 1:
        raise DecodeError("unsupported_version", f"schema version {version!r}")
    try:
        return MESSAGE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise DecodeError("invalid", f"{where}: {first.get('msg')} ({exc.error_count()} errors)") from exc
