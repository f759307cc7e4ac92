"""Hostile payloads the codec must refuse with a typed reason, fast, before anything recurses over them."""

from __future__ import annotations

import time

import msgpack
import pytest

from ctxscope.shared.codec import MAX_CONTAINERS, MAX_DEPTH, MAX_ITEMS, DecodeError, decode, encode
from ctxscope.shared.messages import Log

GOOD = Log(device="dev-1", stream="00000000000000aa", seq=1, ts=1, level="info", message="hi")


def body(**overrides: object) -> bytes:
    return msgpack.packb({**GOOD.model_dump(mode="python"), **overrides}, use_bin_type=True)


def reason_of(payload: bytes) -> str:
    with pytest.raises(DecodeError) as caught:
        decode(payload)
    return caught.value.reason


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 1023])
def test_deep_nesting_is_refused_without_recursion(depth: int) -> None:
    # {"v": 1, "x": [[[...]]]} nested `depth` deep
    payload = b"\x82\xa1v\x01\xa1x" + b"\x91" * (depth - 1) + b"\x90"
    started = time.perf_counter()
    assert reason_of(payload) == "too_deep"
    assert time.perf_counter() - started < 0.5


def test_nesting_within_the_bound_reaches_validation() -> None:
    payload = body(details=None, x=_nest(MAX_DEPTH - 1))
    assert decode(payload) == GOOD  # unknown fields are ignored within a version


def _nest(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("version", [1.0, True, "1", None, 2, [1]])
def test_only_the_integer_1_is_schema_version_1(version: object) -> None:
    assert reason_of(body(v=version)) == "unsupported_version"


def test_a_deep_version_value_is_described_not_formatted() -> None:
    payload = b"\x81\xa1v" + b"\x91" * (MAX_DEPTH - 2) + b"\x90"
    with pytest.raises(DecodeError) as caught:
        decode(payload)
    assert caught.value.reason == "unsupported_version" and len(caught.value.detail) < 100


def test_overlong_and_too_many_containers_are_refused() -> None:
    assert reason_of(body(x=[0] * (MAX_ITEMS + 1))) == "too_many_items"
    bomb = body(x=[[[] for _ in range(1000)] for _ in range(MAX_CONTAINERS // 1000 + 1)])
    assert reason_of(bomb) == "too_many_items"


def test_binary_map_keys_are_refused() -> None:
    assert reason_of(body(details={b"k": 1})) == "bad_key"


def test_big_ints_and_nan_are_invalid_where_the_contract_bounds_them() -> None:
    assert reason_of(body(seq=2**64 - 1)) == "invalid"
    result = msgpack.packb(
        {"v": 1, "kind": "result", "device": "d", "stream": "00000000000000aa", "seq": 1, "ts": 1,
         "run_id": "r", "point_id": "p", "model": "m", "family": "f", "context_len": 2**64 - 1,
         "precision": "bf16", "outcome": "ok",
         "metrics": {"ttft": {"unit": "s", "method": "m", "samples": [float("nan")]}}},
        use_bin_type=True,
    )  # fmt: skip
    with pytest.raises(DecodeError) as caught:
        decode(result)
    assert caught.value.reason == "invalid"


@pytest.mark.parametrize(
    "overrides",
    [{"seq": "1"}, {"seq": 1.0}, {"seq": True}, {"ts": "5"}, {"device": b"dev-1"}, {"message": 7}],
)
def test_fields_are_taken_as_their_own_type_not_coerced(overrides: dict[str, object]) -> None:
    """The wire is typed: a seq sent as text, a float or a boolean is a broken sender, not seq 1."""
    assert reason_of(body(**overrides)) == "invalid"


def test_a_birth_or_a_sample_of_another_type_is_invalid() -> None:
    status = {"v": 1, "kind": "status", "device": "d", "stream": "00000000000000aa", "seq": 0, "ts": 1}
    assert reason_of(msgpack.packb({**status, "state": "online", "birth": True})) == "invalid"
    result = {**status, "kind": "result", "run_id": "r", "point_id": "p", "model": "m", "family": "f",
              "context_len": 1, "precision": "bf16", "outcome": "ok"}  # fmt: skip
    for sample in ("1.5", True):
        metrics = {"ttft": {"unit": "s", "method": "m", "samples": [sample]}}
        assert reason_of(msgpack.packb({**result, "metrics": metrics})) == "invalid"
    metrics = {"ttft": {"unit": "s", "method": "m", "samples": [2]}}  # an integer is a number
    assert decode(msgpack.packb({**result, "metrics": metrics})).metrics["ttft"].samples == [2.0]


def test_validation_details_are_short() -> None:
    with pytest.raises(DecodeError) as caught:
        decode(body(level="x" * 1_000_000))
    assert len(str(caught.value)) < 400


def test_a_valid_message_still_round_trips() -> None:
    assert decode(encode(GOOD)) == GOOD
