"""Reads a torch.profiler Chrome trace into device events per pass, with host gaps and syncs apart.

The Chrome trace is the profiler's public, versioned output (the same file Perfetto opens), so this
reader does not depend on torch's private event classes. Each kernel, copy or memset is linked to
the host call that launched it (`args.correlation`), and from there to the host ranges open on that
thread at launch time: aten ops, labelled modules and the pass range `ctxscope::pass::<label>`.

Without device events (a CPU-only run) the CPU ops' self times stand in for device time, and the
pass says so (`cpu_ops`), so no one mistakes them for kernel time.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ctxscope.agent.profiling.classify import DeviceEvent

PASS_PREFIX = "ctxscope::pass::"
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
LAUNCH_CATEGORIES = frozenset({"cuda_runtime", "cuda_driver"})
HOST_RANGE_CATEGORIES = frozenset({"cpu_op", "user_annotation"})
SYNC_CALL = re.compile(r"^(cuda|cu)(Device|Stream|Event|Ctx)Synchronize")

DeviceTimeSource = Literal["cuda_kernels", "cpu_ops"]


@dataclass(frozen=True)
class HostTimeline:
    """Where the pass's time went apart from kernels, all under the profiler (not latency figures).

    `device_idle_ns` is the time inside the device's busy span (first kernel start to last kernel
    end) when no kernel, copy or memset ran: host launch gaps and waits. Synchronization calls on
    the host are counted on their own. Device fields are None without device events (CPU runs).
    """

    host_span_ns: int
    device_span_ns: int | None
    device_busy_ns: int | None
    device_idle_ns: int | None
    idle_gaps: int | None
    largest_gap_ns: int | None
    sync_calls: int
    sync_ns: int

    def to_details(self) -> dict[str, Any]:
        def ms(value: int | None) -> float | None:
            return None if value is None else value / 1e6

        return {
            "host_span_ms": ms(self.host_span_ns),
            "device_span_ms": ms(self.device_span_ns),
            "device_busy_ms": ms(self.device_busy_ns),
            "device_idle_ms": ms(self.device_idle_ns),
            "idle_gaps": self.idle_gaps,
            "largest_gap_ms": ms(self.largest_gap_ns),
            "sync_calls": self.sync_calls,
            "sync_ms": ms(self.sync_ns),
        }


@dataclass(frozen=True)
class PassTrace:
    label: str
    source: DeviceTimeSource
    events: tuple[DeviceEvent, ...]
    timeline: HostTimeline


@dataclass
class _Range:
    name: str
    start_ns: int
    end_ns: int
    is_op: bool
    scopes: tuple[str, ...] = ()
    child_ns: int = 0


def _ns(us: float) -> int:
    return round(us * 1000)


def parse_trace(trace: Mapping[str, Any]) -> list[PassTrace]:
    """The passes found in a Chrome trace, in the order they started."""
    device: list[dict[str, Any]] = []
    launches: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    ranges: dict[tuple[str, str], list[_Range]] = defaultdict(list)
    for event in trace.get("traceEvents", []):
        if event.get("ph") != "X":
            continue
        cat = event.get("cat")
        thread = (str(event.get("pid")), str(event.get("tid")))
        if cat in DEVICE_CATEGORIES:
            device.append(event)
        elif cat in LAUNCH_CATEGORIES:
            launches[thread].append(event)
        elif cat in HOST_RANGE_CATEGORIES:
            start = _ns(event["ts"])
            ranges[thread].append(_Range(event["name"], start, start + _ns(event["dur"]), cat == "cpu_op"))

    launch_scopes: dict[int, tuple[str, ...]] = {}
    syncs: list[tuple[tuple[str, ...], int]] = []
    for thread in set(ranges) | set(launches):
        _nest(ranges[thread], launches[thread], launch_scopes, syncs)

    passes = [r for thread_ranges in ranges.values() for r in thread_ranges if r.name.startswith(PASS_PREFIX)]
    passes.sort(key=lambda r: r.start_ns)
    if device:
        kernels = [_device_event(e, launch_scopes) for e in device]
        return [_pass(p, "cuda_kernels", [k for k in kernels if p.name in k.scopes], syncs) for p in passes]
    ops = [
        DeviceEvent(r.name, r.start_ns, r.end_ns - r.start_ns - r.child_ns, None, r.scopes)
        for thread_ranges in ranges.values()
        for r in thread_ranges
        if r.is_op
    ]
    return [_pass(p, "cpu_ops", [o for o in ops if p.name in o.scopes], syncs) for p in passes]


def _nest(
    ranges: list[_Range],
    launches: Sequence[dict[str, Any]],
    launch_scopes: dict[int, tuple[str, ...]],
    syncs: list[tuple[tuple[str, ...], int]],
) -> None:
    """Sweeps one thread's ranges and launches in time order, with a stack of the open ranges."""
    items: list[tuple[int, int, _Range | dict[str, Any]]] = [
        (r.start_ns, r.start_ns - r.end_ns, r) for r in ranges
    ]
    items += [(_ns(e["ts"]), -_ns(e.get("dur", 0)), e) for e in launches]
    items.sort(key=lambda item: (item[0], item[1]))
    stack: list[_Range] = []
    for start, _, item in items:
        while stack and stack[-1].end_ns <= start and stack[-1].start_ns < start:
            stack.pop()
        scopes = tuple(r.name for r in stack)
        if isinstance(item, _Range):
            item.scopes = scopes
            if stack:
                stack[-1].child_ns += item.end_ns - item.start_ns
            stack.append(item)
            continue
        correlation = (item.get("args") or {}).get("correlation")
        if correlation is not None:
            launch_scopes[int(correlation)] = scopes
        if SYNC_CALL.match(item.get("name", "")):
            syncs.append((scopes, _ns(item.get("dur", 0))))


def _device_event(event: Mapping[str, Any], launch_scopes: Mapping[int, tuple[str, ...]]) -> DeviceEvent:
    args = event.get("args") or {}
    correlation = args.get("correlation")
    stream = args.get("stream")
    return DeviceEvent(
        name=event["name"],
        start_ns=_ns(event["ts"]),
        dur_ns=_ns(event["dur"]),
        stream=int(stream) if stream is not None else None,
        scopes=launch_scopes.get(int(correlation), ()) if correlation is not None else (),
    )


def _pass(
    span: _Range,
    source: DeviceTimeSource,
    events: list[DeviceEvent],
    syncs: Iterable[tuple[tuple[str, ...], int]],
) -> PassTrace:
    inside = [dur for scopes, dur in syncs if span.name in scopes]
    timeline = HostTimeline(
        host_span_ns=span.end_ns - span.start_ns,
        device_span_ns=None,
        device_busy_ns=None,
        device_idle_ns=None,
        idle_gaps=None,
        largest_gap_ns=None,
        sync_calls=len(inside),
        sync_ns=sum(inside),
    )
    if source == "cuda_kernels" and events:
        timeline = _with_device_gaps(timeline, events)
    return PassTrace(
        span.name.removeprefix(PASS_PREFIX), source, tuple(sorted(events, key=lambda e: e.start_ns)), timeline
    )


def _with_device_gaps(timeline: HostTimeline, events: Sequence[DeviceEvent]) -> HostTimeline:
    intervals = sorted((e.start_ns, e.start_ns + e.dur_ns) for e in events)
    busy = 0
    gaps: list[int] = []
    current_start, current_end = intervals[0]
    for start, end in intervals[1:]:
        if start > current_end:
            busy += current_end - current_start
            gaps.append(start - current_end)
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    busy += current_end - current_start
    span = max(end for _, end in intervals) - intervals[0][0]
    return HostTimeline(
        host_span_ns=timeline.host_span_ns,
        device_span_ns=span,
        device_busy_ns=busy,
        device_idle_ns=span - busy,
        idle_gaps=len(gaps),
        largest_gap_ns=max(gaps, default=0),
        sync_calls=timeline.sync_calls,
        sync_ns=timeline.sync_ns,
    )
