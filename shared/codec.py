"""msgpack codec for contract messages, with bounded decoding and typed errors.

Decoding is bounded before any value is built or formatted: the payload's size, each string, binary
and container's length, the number of containers and the nesting depth. A message nested 1,000 deep
(msgpack allows that) must not reach code that recurses over it (`repr`, `json.dumps`, pydantic).
Every refusal is a `DecodeError` whose `reason` is one of `REASONS`, with a short detail that never
echoes more than a few dozen characters of the input.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, TypeAdapter, ValidationError

from ctxscope.shared.messages import MESSAGE_ADAPTER, PRESENCE_ADAPTER, CollectorPresence, Message
from ctxscope.shared.version import SCHEMA_VERSION

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 32  # nesting of maps and arrays; real messages (plans, details) stay under 8
MAX_ITEMS = 100_000  # entries of one map or array (a Metric holds at most 100,000 samples)
MAX_CONTAINERS = 100_000  # maps and arrays in one message: bounds the memory one message can take
DETAIL_CHARS = 300

REASONS = frozenset(
    {
        "too_large",
        "not_msgpack",
        "too_deep",
        "too_many_items",
        "bad_key",
        "not_a_map",
        "unsupported_version",
        "invalid",
    }
)


class DecodeError(ValueError):
    """Bytes that are not a valid contract message; `reason` is a short machine-friendly tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


T = TypeVar("T")


def encode(message: BaseModel) -> bytes:
    """Serialize a message to msgpack (bytes stay binary, no JSON detour)."""
    return msgpack.packb(message.model_dump(mode="python"), use_bin_type=True)


def decode(payload: bytes) -> Message:
    """Parse and validate bytes into a message; raise DecodeError with a reason otherwise."""
    return _validated(payload, MESSAGE_ADAPTER)


def decode_presence(payload: bytes) -> CollectorPresence:
    """Parse and validate a collector's presence, bounded and refused as `decode` does."""
    return _validated(payload, PRESENCE_ADAPTER)


def _validated(payload: bytes, adapter: TypeAdapter[T]) -> T:
    raw = unpack_bounded(payload)
    if not isinstance(raw, dict):
        raise DecodeError("not_a_map", f"top level is {type(raw).__name__}")
    version = raw.get("v")
    # `type() is int`: 1.0 and True compare equal to 1 but are not schema version 1.
    if type(version) is not int or version != SCHEMA_VERSION:
        raise DecodeError("unsupported_version", f"schema version {describe(version)}")
    try:
        return adapter.validate_python(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p)[:40] for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg')} ({exc.error_count()} errors)"
        raise DecodeError("invalid", shorten(detail)) from exc


def unpack_bounded(payload: bytes) -> Any:
    """msgpack bytes -> Python values, refusing oversized, overlong, too numerous or too deep values."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(payload)} bytes > {MAX_MESSAGE_BYTES}")
    counter = _ContainerCounter()
    try:
        raw: Any = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_MESSAGE_BYTES,
            max_bin_len=MAX_MESSAGE_BYTES,
            max_ext_len=0,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            list_hook=counter.array,
            object_hook=counter.map,
        )
    except DecodeError:
        raise
    except msgpack.StackError as exc:  # deeper than the unpacker's own stack (1,024)
        raise DecodeError("too_deep", f"nesting deeper than {MAX_DEPTH}") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # corrupt input raises all three
        message = str(exc)
        if "exceeds max_array_len" in message or "exceeds max_map_len" in message:
            raise DecodeError("too_many_items", f"a map or array of more than {MAX_ITEMS} entries") from exc
        raise DecodeError("not_msgpack", shorten(f"{type(exc).__name__}: {message}")) from exc
    _check_depth(raw)
    return raw


class _ContainerCounter:
    """msgpack hooks: count maps and arrays as they are built and refuse non-string map keys."""

    def __init__(self) -> None:
        self.containers = 0

    def _count(self) -> None:
        self.containers += 1
        if self.containers > MAX_CONTAINERS:
            raise DecodeError("too_many_items", f"more than {MAX_CONTAINERS} maps and arrays")

    def array(self, items: list[Any]) -> list[Any]:
        self._count()
        return items

    def map(self, entries: dict[Any, Any]) -> dict[str, Any]:
        self._count()
        for key in entries:
            if type(key) is not str:  # bin keys pass strict_map_key but have no JSON or TOML form
                raise DecodeError("bad_key", f"a map key of type {type(key).__name__}")
        return entries


def _check_depth(raw: Any) -> None:
    """Iteratively (never recursing over input) refuse nesting deeper than MAX_DEPTH."""
    if not isinstance(raw, dict | list):
        return
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    raise DecodeError("too_deep", f"nesting deeper than {MAX_DEPTH}")
                stack.append((child, depth + 1))


def describe(value: object) -> str:
    """A short, safe description of an input value for an error detail (no repr of containers)."""
    if value is None or isinstance(value, bool | int | float):
        return f"{value!r} ({type(value).__name__})"[:60]
    if isinstance(value, str):
        return f"{value[:40]!r} (str)"
    return f"of type {type(value).__name__}"


def shorten(text: str, limit: int = DETAIL_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
