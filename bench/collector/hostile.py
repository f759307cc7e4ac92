"""Seeded hostile and valid MQTT messages for the fuzz test and the fuzz benchmark.

Every generated message is labelled with what the receiver must do with it: store it (`VALID`),
reject it with one named reason, or reject it with any reason (`ANY_REJECT`: random bytes). The
hostile kinds are the ones a stranger on the broker can send: random bytes, nesting up to msgpack's
limit, oversized arrays and container bombs, NaN, 2^64 integers, versions that only look like 1,
messages on the wrong channel, forged and malformed ids, binary map keys, truncated and padded
messages, unknown kinds; for the agent also misaddressed, expired (refused by the command guard) and
non-command messages.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from ctxscope.shared.codec import MAX_CONTAINERS, MAX_DEPTH, MAX_ITEMS, MAX_MESSAGE_BYTES, encode
from ctxscope.shared.messages import (
    CHANNEL_OF_KIND,
    Command,
    CommandAck,
    Log,
    Message,
    Metric,
    PointResult,
    RunFinished,
    RunProgress,
    RunStarted,
    TelemetryBatch,
    TelemetryChannel,
)
from ctxscope.shared.topics import PREFIX, Channel, command_topic, presence_topic, topic_for

VALID = "valid"
ANY_REJECT = "any_reject"
DATA_CHANNELS = [c for c in Channel if c is not Channel.CMD]
TS = 1_760_000_000_000_000_000


@dataclass(frozen=True)
class Case:
    topic: str
    payload: bytes
    expect: str  # VALID, ANY_REJECT or the reject reason


def _pack(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def _nested(depth: int) -> bytes:
    """msgpack bytes of an array nested `depth` deep, built without Python recursion."""
    return b"\x91" * (depth - 1) + b"\x90"


class Hostile:
    """One seeded generator; `devices` are the ids whose topics carry the messages."""

    def __init__(self, seed: int, devices: tuple[str, ...] = ("fz-1", "fz-2", "fz-3")) -> None:
        self.rng = random.Random(seed)
        self.devices = devices
        self._stream = {d: f"{i + 1:016x}" for i, d in enumerate(devices)}
        self._seq = dict.fromkeys(devices, 0)

    # -- valid records ------------------------------------------------------------------------

    def _envelope(self, device: str) -> dict[str, Any]:
        self._seq[device] += 1
        return {"device": device, "stream": self._stream[device], "seq": self._seq[device], "ts": TS}

    def record(self, device: str | None = None) -> Message:
        """A valid record with the device's next seq; some carry NUL, NaN in details or 2^64 ints."""
        rng = self.rng
        device = device or rng.choice(self.devices)
        env = self._envelope(device)
        kind = rng.choice(["result", "result", "telemetry", "log", "run", "ack"])
        if kind == "result":
            return PointResult(
                **env, run_id="run-1", point_id=f"p{env['seq']}", model="qwen2.5-0.5b", family="transformer",
                context_len=rng.choice([1024, 4096, 65536]), precision="bf16", outcome="ok",
                error=rng.choice([None, "nul \x00 inside", "ünïcode ✓"]),
                metrics={"ttft": Metric(unit="s", method="events", samples=[rng.random() for _ in range(5)])},
                details=rng.choice([{}, {"roofline": float("nan")}, {"big": 2**64 - 1, "neg": -(2**63)}]),
            )  # fmt: skip
        if kind == "telemetry":
            n = rng.randint(0, 50)
            t = np.arange(n, dtype="<i8") * 50_000_000
            power = np.asarray([rng.uniform(10, 300) for _ in range(n)], dtype="<f4")
            return TelemetryBatch(
                **env, source="nvml", mono_to_wall_ns=TS, t_ns=t.tobytes(),
                channels={"power_w": TelemetryChannel(unit="W", dtype="f4", data=power.tobytes())},
            )  # fmt: skip
        if kind == "log":
            return Log(**env, level="info", message=rng.choice(["hello", "nul\x00", "x" * 1000]))
        if kind == "ack":
            return CommandAck(**env, command_id="cmd-1", name="run_plan", accepted=False, reason="r" * 100)
        return rng.choice(
            [
                lambda: RunStarted(
                    **env, run_id="run-1", plan={"name": "p"}, plan_hash="abcdef012", total_points=3
                ),
                lambda: RunProgress(**env, run_id="run-1", done=1, total=3, point="p1"),
                lambda: RunFinished(**env, run_id="run-1", outcome="completed", points_ok=3, points_failed=0),
            ]
        )()

    def records(self, n: int) -> list[Case]:
        out = []
        for _ in range(n):
            message = self.record()
            out.append(Case(topic_for(message.device, CHANNEL_OF_KIND[message.kind]), encode(message), VALID))
        return out

    def _base(self, device: str) -> dict[str, Any]:
        """A valid result as a plain dict (its seq is not consumed: mutations of it are rejected)."""
        rng = self.rng
        return {
            "v": 1, "kind": "result", "device": device, "stream": self._stream[device],
            "seq": rng.randint(1, 10**6), "ts": TS, "run_id": "run-x", "point_id": "p", "model": "m",
            "family": "transformer", "context_len": 1024, "precision": "bf16", "outcome": "ok",
            "metrics": {"ttft": {"unit": "s", "method": "m", "samples": [0.1, 0.2]}},
        }  # fmt: skip

    # -- hostile messages for the collector ---------------------------------------------------

    def collector_cases(self, n: int, *, oversized: bool = False) -> Iterator[Case]:
        """`n` hostile messages on the collector's data topics (plus one of 8 MB + 1 if `oversized`)."""
        makers: list[Callable[[str, str], Case]] = [
            self._random_bytes, self._random_bytes, self._deep, self._deep_version, self._huge_array,
            self._container_bomb, self._bad_version, self._nan, self._big_int, self._wrong_channel,
            self._forged_device, self._bad_topic_device, self._bad_stream, self._bin_key, self._truncated,
            self._trailing, self._unknown_kind, self._command_on_data,
        ]  # fmt: skip
        weights = [8, 8, 4, 2, 0.2, 0.2, 4, 4, 4, 4, 4, 3, 3, 3, 4, 3, 3, 2]
        if oversized:
            device = self.devices[0]
            yield Case(topic_for(device, Channel.RESULT), b"\x00" * (MAX_MESSAGE_BYTES + 1), "too_large")
        for _ in range(n):
            device = self.rng.choice(self.devices)
            make = self.rng.choices(makers, weights)[0]
            yield make(device, topic_for(device, self.rng.choice(DATA_CHANNELS)))

    def _random_bytes(self, _device: str, topic: str) -> Case:
        return Case(topic, self.rng.randbytes(self.rng.randint(0, 300)), ANY_REJECT)

    def _deep(self, _device: str, topic: str) -> Case:
        depth = self.rng.randint(MAX_DEPTH + 1, 1023)
        return Case(topic, b"\x83\xa1v\x01\xa4kind\xa6result\xa7details" + _nested(depth - 1), "too_deep")

    def _deep_version(self, _device: str, topic: str) -> Case:
        return Case(topic, b"\x81\xa1v" + _nested(self.rng.randint(MAX_DEPTH + 1, 1023) - 1), "too_deep")

    def _huge_array(self, _device: str, topic: str) -> Case:
        n = MAX_ITEMS + self.rng.randint(1, 1000)
        return Case(topic, b"\x82\xa1v\x01\xa1x\xdd" + n.to_bytes(4, "big") + b"\xc0" * n, "too_many_items")

    def _container_bomb(self, _device: str, topic: str) -> Case:
        inner = b"\xdc" + (1000).to_bytes(2, "big") + b"\x90" * 1000
        count = MAX_CONTAINERS // 1000 + 1
        return Case(
            topic, b"\x82\xa1v\x01\xa1x\xdc" + count.to_bytes(2, "big") + inner * count, "too_many_items"
        )

    def _bad_version(self, device: str, topic: str) -> Case:
        body = {**self._base(device), "v": self.rng.choice([1.0, True, 2, 0, -1, "1", None, [1], {"v": 1}])}
        return Case(topic, _pack(body), "unsupported_version")

    def _nan(self, device: str, _topic: str) -> Case:
        bad = self.rng.choice([float("nan"), float("inf"), float("-inf")])
        body = self._base(device)
        body["metrics"]["ttft"]["samples"] = [0.1, bad]
        return Case(topic_for(device, Channel.RESULT), _pack(body), "invalid")

    def _big_int(self, device: str, _topic: str) -> Case:
        field = self.rng.choice(["seq", "ts", "context_len"])
        body = {**self._base(device), field: self.rng.choice([2**64 - 1, 2**63, -1, -(2**63)])}
        if field == "context_len" and body[field] == -(2**63):
            body[field] = 2**63
        return Case(topic_for(device, Channel.RESULT), _pack(body), "invalid")

    def _wrong_channel(self, device: str, _topic: str) -> Case:
        channel = self.rng.choice([c for c in DATA_CHANNELS if c is not Channel.RESULT])
        return Case(topic_for(device, channel), _pack(self._base(device)), "wrong_channel")

    def _forged_device(self, device: str, _topic: str) -> Case:
        other = self.rng.choice([d for d in self.devices if d != device] or ["fz-other"])
        return Case(topic_for(device, Channel.RESULT), _pack(self._base(other)), "device_mismatch")

    def _bad_topic_device(self, device: str, _topic: str) -> Case:
        bad = self.rng.choice(["UPPER", "dev_x", "a" * 33, "dév", "sp ace", "x" * 200])
        return Case(f"{PREFIX}/{bad}/result", _pack(self._base(device)), "bad_topic")

    def _bad_stream(self, device: str, _topic: str) -> Case:
        body = {**self._base(device), "stream": self.rng.choice(["", "zz", "0" * 17, 5, None])}
        return Case(topic_for(device, Channel.RESULT), _pack(body), "invalid")

    def _bin_key(self, device: str, _topic: str) -> Case:
        body = {**self._base(device), "details": {b"\xff\x00": 1}}
        return Case(topic_for(device, Channel.RESULT), _pack(body), "bad_key")

    def _truncated(self, device: str, _topic: str) -> Case:
        payload = _pack(self._base(device))
        return Case(
            topic_for(device, Channel.RESULT), payload[: self.rng.randint(1, len(payload) - 1)], "not_msgpack"
        )

    def _trailing(self, device: str, _topic: str) -> Case:
        payload = _pack(self._base(device)) + self.rng.randbytes(self.rng.randint(1, 20))
        return Case(topic_for(device, Channel.RESULT), payload, "not_msgpack")

    def _unknown_kind(self, device: str, topic: str) -> Case:
        body = {**self._base(device), "kind": self.rng.choice(["zzz", "", 7, None, "RESULT"])}
        return Case(topic, _pack(body), "invalid")

    def _command_on_data(self, device: str, _topic: str) -> Case:
        payload = encode(self.command(device, "run_plan", expires_in_s=60, seq=1))
        return Case(topic_for(device, Channel.RUN), payload, "wrong_channel")

    # -- messages for an agent's command topic ------------------------------------------------

    def command(self, device: str, name: str, *, expires_in_s: float, seq: int) -> Command:
        return Command(
            device=device, stream="00000000000000cc", seq=seq, ts=TS, command_id=f"cmd-{seq}", name=name,
            args={"plan": {"name": "x"}}, expires_at=TS + int(expires_in_s * 1e9),
        )  # fmt: skip

    def _presence(self, case: int) -> Case:
        """A hostile message on a collector's presence topic, which every agent reads."""
        collector = f"fz-collector-{self.rng.randrange(3)}"
        topic = presence_topic(collector)
        body = {"v": 1, "kind": "collector_presence", "collector": collector, "online": False, "ts": TS}
        if case == 0:
            return Case(topic, self.rng.randbytes(self.rng.randint(1, 300)), ANY_REJECT)
        if case == 1:
            return Case(
                topic, b"\x81\xa1v" + _nested(self.rng.randint(MAX_DEPTH + 1, 1023) - 1), "presence_too_deep"
            )
        if case == 2:  # a device cannot say that the collector is offline for another
            return Case(topic, _pack({**body, "collector": "fz-someone-else"}), "presence_misaddressed")
        return Case(topic, _pack({**body, "online": "no"}), "presence_invalid")

    def agent_cases(self, device: str, n: int, now_ns: int) -> Iterator[Case]:
        """`n` messages on `device`'s command topics and the collectors' presence topics; VALID ones are
        live commands the handler must get. Labels are the agent link's reasons (`Link.rejected()`)."""
        rng = self.rng
        live = (now_ns - TS) / 1e9 + 300  # seconds from TS to five minutes from now
        for seq in range(1, n + 1):
            name = rng.choice(["run_plan", "stop", "x"])
            topic = command_topic(device, name)
            roll = rng.random()
            if roll < 0.15:
                yield Case(topic, encode(self.command(device, name, expires_in_s=live, seq=seq)), VALID)
            elif roll < 0.35:
                yield Case(topic, rng.randbytes(rng.randint(0, 300)), ANY_REJECT)
            elif roll < 0.45:
                yield Case(topic, b"\x81\xa1v" + _nested(rng.randint(MAX_DEPTH + 1, 1023) - 1), "too_deep")
            elif roll < 0.55:
                body = {**self.command(device, name, expires_in_s=live, seq=seq).model_dump(), "v": 1.0}
                yield Case(topic, _pack(body), "unsupported_version")
            elif roll < 0.62:
                other = self.command("fz-other", name, expires_in_s=live, seq=seq)
                yield Case(topic, encode(other), "misaddressed")
            elif roll < 0.69:
                wrong_name = self.command(device, "other", expires_in_s=live, seq=seq)
                yield Case(topic, encode(wrong_name), "misaddressed")
            elif roll < 0.76:
                yield Case(
                    topic, encode(self.command(device, name, expires_in_s=1, seq=seq)), "refused_expired"
                )
            elif roll < 0.83:
                body = {
                    **self.command(device, name, expires_in_s=live, seq=seq).model_dump(),
                    "seq": 2**64 - 1,
                }
                yield Case(topic, _pack(body), "invalid")
            elif roll < 0.90:
                yield Case(topic, _pack(self._base(self.devices[0])), "not_a_command")
            elif roll < 0.95:
                yield self._presence(rng.randrange(4))
            else:
                body = {
                    **self.command(device, name, expires_in_s=live, seq=seq).model_dump(),
                    "args": {b"k": 1},
                }
                yield Case(topic, _pack(body), "bad_key")
