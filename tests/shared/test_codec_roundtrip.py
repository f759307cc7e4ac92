"""Property tests: every message kind survives encode/decode unchanged; junk is rejected with a reason."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxscope.shared.codec import MAX_MESSAGE_BYTES, REASONS, DecodeError, decode, encode
from ctxscope.shared.messages import (
    CHANNEL_OF_KIND,
    MAX_BIRTH,
    MESSAGE_ADAPTER,
    Command,
    CommandAck,
    DeviceMeta,
    Log,
    Metric,
    PointResult,
    RunFinished,
    RunProgress,
    RunStarted,
    Status,
    TelemetryBatch,
    TelemetryChannel,
)

device_ids = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True)
stream_ids = st.from_regex(r"[0-9a-f]{16}", fullmatch=True)
u63 = st.integers(min_value=0, max_value=2**63 - 1)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**62), 2**62), finite, names)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=12,
)


def envelope() -> dict[str, st.SearchStrategy]:
    return {"device": device_ids, "stream": stream_ids, "seq": u63, "ts": u63}


metrics = st.builds(
    Metric,
    unit=st.sampled_from(["ms", "s", "GiB", "J", "W", "J/token"]),
    method=names,
    samples=st.lists(finite, min_size=1, max_size=20),
)


@st.composite
def telemetry_batches(draw: st.DrawFn) -> TelemetryBatch:
    n = draw(st.integers(0, 50))
    t_ns = np.sort(np.asarray(draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n)), dtype="<i8"))
    channels = {}
    for name in draw(
        st.lists(st.sampled_from(["power_w", "gpu_temp_c", "sm_clock_mhz", "ram_used_bytes"]), unique=True)
    ):
        dtype = draw(st.sampled_from(["f4", "f8"]))
        values = np.asarray(draw(st.lists(finite32, min_size=n, max_size=n)), dtype=f"<{dtype}")
        channels[name] = TelemetryChannel(unit="W", dtype=dtype, data=values.tobytes())
    return TelemetryBatch(
        **{k: draw(v) for k, v in envelope().items()},
        source=draw(st.sampled_from(["nvml", "jtop", "host"])),
        mono_to_wall_ns=draw(st.integers(-(2**62), 2**62)),
        t_ns=t_ns.tobytes(),
        channels=channels,
    )


births = st.integers(0, MAX_BIRTH)
messages = st.one_of(
    st.builds(
        DeviceMeta,
        **envelope(),
        birth=births,
        agent_version=names,
        hostname=names,
        platform=st.dictionaries(names, names, max_size=3),
        telemetry=st.dictionaries(names, st.lists(names, max_size=3), max_size=3),
    ),
    st.builds(
        Status,
        **envelope(),
        state=st.sampled_from(["online", "busy", "offline"]),
        birth=births,
        backlog=st.none() | u63,
    ),
    telemetry_batches(),
    st.builds(
        RunStarted,
        **envelope(),
        run_id=names,
        plan=st.dictionaries(names, json_values, max_size=4),
        plan_hash=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        total_points=u63,
    ),
    st.builds(RunProgress, **envelope(), run_id=names, done=u63, total=u63, point=st.none() | names),
    st.builds(
        RunFinished,
        **envelope(),
        run_id=names,
        outcome=st.sampled_from(["completed", "failed", "cancelled"]),
        points_ok=u63,
        points_failed=u63,
    ),
    st.builds(
        PointResult,
        **envelope(),
        run_id=names,
        point_id=names,
        model=names,
        family=names,
        context_len=st.integers(1, 2**40),
        precision=st.sampled_from(["bf16", "fp16", "fp32"]),
        outcome=st.sampled_from(["ok", "oom", "fault", "timeout", "skipped"]),
        metrics=st.dictionaries(names, metrics, max_size=4),
        implementation=st.dictionaries(names, names, max_size=3),
        details=st.dictionaries(names, json_values, max_size=3),
    ),
    st.builds(Log, **envelope(), level=st.sampled_from(["debug", "info", "warning", "error"]), message=names),
    st.builds(
        Command,
        **envelope(),
        command_id=names,
        name=st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True),
        args=st.dictionaries(names, json_values, max_size=3),
        expires_at=u63,
    ),
    st.builds(
        CommandAck,
        **envelope(),
        command_id=names,
        name=names,
        accepted=st.booleans(),
        reason=st.none() | names,
    ),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_every_kind_round_trips(message) -> None:
    decoded = decode(encode(message))
    assert type(decoded) is type(message)
    assert decoded == message


def test_every_kind_has_a_channel() -> None:
    kinds = {
        m.model_fields["kind"].default
        for m in (
            DeviceMeta,
            Status,
            TelemetryBatch,
            RunStarted,
            RunProgress,
            RunFinished,
            PointResult,
            Log,
            Command,
            CommandAck,
        )
    }
    assert kinds == set(CHANNEL_OF_KIND)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_other_errors(payload: bytes) -> None:
    try:
        decode(payload)
    except DecodeError as exc:
        assert exc.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_corrupted_fields_are_rejected_with_a_reason(message, data) -> None:
    raw = msgpack.unpackb(encode(message), raw=False)
    field = data.draw(st.sampled_from(["device", "stream", "seq", "ts", "kind"]))
    raw[field] = data.draw(st.sampled_from([None, -1, "UPPER CASE", 2**64 - 1, [1, 2], "x" * 40]))
    with pytest.raises(DecodeError):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_unknown_fields_are_ignored_within_a_version() -> None:
    status = Status(device="dev-1", stream="0123456789abcdef", seq=3, ts=1, state="online", birth=2)
    raw = msgpack.unpackb(encode(status), raw=False)
    raw["added_in_a_later_minor_release"] = {"x": 1}
    assert decode(msgpack.packb(raw, use_bin_type=True)) == status


@pytest.mark.parametrize("kind", ["status", "meta"])
def test_a_birth_past_the_bound_is_refused(kind: str) -> None:
    """A retained state with birth 2^63-1 could otherwise outrank every real birth for good."""
    status = Status(device="dev-1", stream="0123456789abcdef", seq=3, ts=1, state="offline", birth=2)
    raw = msgpack.unpackb(encode(status), raw=False)
    if kind == "meta":
        raw.update(kind="meta", agent_version="1", hostname="h")
    raw["birth"] = 2**63 - 1
    with pytest.raises(DecodeError, match="birth"):
        decode(msgpack.packb(raw, use_bin_type=True))
    raw["birth"] = MAX_BIRTH
    assert decode(msgpack.packb(raw, use_bin_type=True)).birth == MAX_BIRTH  # type: ignore[union-attr]


def test_other_schema_versions_are_refused() -> None:
    status = Status(device="dev-1", stream="0123456789abcdef", seq=3, ts=1, state="online", birth=2)
    raw = msgpack.unpackb(encode(status), raw=False)
    raw["v"] = 2
    with pytest.raises(DecodeError) as info:
        decode(msgpack.packb(raw, use_bin_type=True))
    assert info.value.reason == "unsupported_version"


def test_oversized_payloads_are_refused_before_parsing() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    assert info.value.reason == "too_large"


def test_telemetry_channels_must_match_timestamps() -> None:
    with pytest.raises(ValueError, match="3 values for 2 timestamps"):
        TelemetryBatch(
            device="d",
            stream="0123456789abcdef",
            seq=1,
            ts=1,
            source="host",
            mono_to_wall_ns=0,
            t_ns=np.arange(2, dtype="<i8").tobytes(),
            channels={"cpu": TelemetryChannel(unit="%", dtype="f4", data=np.ones(3, "<f4").tobytes())},
        )


def test_metric_keeps_raw_samples_and_derives_spread() -> None:
    metric = Metric(unit="ms", method="cuda events, 5 reps", samples=[5.0, 1.0, 3.0, 2.0, 4.0])
    assert metric.median == 3.0
    assert metric.iqr == pytest.approx(2.0)
    with pytest.raises(ValueError):
        Metric(unit="ms", method="x", samples=[float("nan")])
    with pytest.raises(ValueError):
        Metric(unit="ms", method="x", samples=[])


@settings(max_examples=150, deadline=None)
@given(messages)
def test_every_kind_round_trips_through_json_too(message) -> None:
    # JSON-lines output and exports: binary telemetry arrays become base64 and come back intact.
    assert MESSAGE_ADAPTER.validate_json(message.model_dump_json()) == message
