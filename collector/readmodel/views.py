"""JSON shapes of the pages, built from the store; pages, the terminal view and the report render them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ctxscope.collector.aggregate.characterize import characterize, compare
from ctxscope.collector.aggregate.points import series_key
from ctxscope.collector.readmodel.reference import max_context as reference_max_context
from ctxscope.collector.readmodel.source import FleetSource
from ctxscope.collector.shrunk import characterization_results, is_shrunk_label
from ctxscope.collector.store.writes import live_order
from ctxscope.shared.messages import PointResult

ONLINE_STATES = frozenset({"online", "busy"})
# A retained `online` status stays true while the broker keeps the session; silence this long is shown.
STALE_AFTER_S = 60.0
# Only the newest batch of a channel is read for live values (its last sample is shown).
LIVE_WINDOW_S = 0.0
OPERATORS_KEY = "operators"
RECENT_LOGS = 50


class ChannelCache:
    """Telemetry channels per device, re-read at most every `ttl_s` (they change only when an agent's
    backends do), so live views do not scan a device's telemetry history on every refresh."""

    def __init__(self, ttl_s: float = 30.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, list[tuple[str, str, str]]]] = {}
        self._lock = threading.Lock()

    def of(self, source: FleetSource, device: str) -> list[tuple[str, str, str]]:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(device)
        if entry is not None and now - entry[0] < self.ttl_s:
            return entry[1]
        channels = source.telemetry_channels(device)
        if channels:  # a device that has sent no telemetry yet is asked again next time
            with self._lock:
                self._entries[device] = (now, channels)
        return channels


def live_telemetry(source: FleetSource, device: str, cache: ChannelCache | None = None) -> dict[str, Any]:
    """The newest value of each channel of a device, with its unit and wall time; plus the headline
    `power_w` and `temperature_c` (hottest sensor). Channels never sent are absent."""
    channels: dict[str, dict[str, Any]] = {}
    listed = cache.of(source, device) if cache is not None else source.telemetry_channels(device)
    for src, channel, unit in listed:
        series = source.latest_telemetry(device, src, channel, LIVE_WINDOW_S)
        if series is None or not len(series.values):
            continue
        channels[channel] = {
            "source": src,
            "unit": unit,
            "value": float(series.values[-1]),
            "wall_ns": int(series.wall_ns[-1]),
        }
    return {"channels": channels, **headline(channels)}


def stored_live(live: dict[str, Any]) -> dict[str, Any]:
    """`live_telemetry`'s shape from a device row's `live` column (kept by the store at ingest), so
    the fleet view costs no telemetry query per device; of a channel sent by two sources, the newer
    (`live_order`: a sample dated ahead of its arrival loses to one that is not)."""
    channels: dict[str, dict[str, Any]] = {}
    newest: dict[str, tuple[bool, int]] = {}  # each channel's entry, in the store's live order
    for source, entry in sorted(live.items()):
        for name, channel in entry.get("channels", {}).items():
            if channel.get("value") is None or (name in newest and newest[name] >= live_order(entry)):
                continue
            newest[name] = live_order(entry)
            channels[name] = {
                "source": source,
                "unit": channel["unit"],
                "value": float(channel["value"]),
                "wall_ns": int(entry["wall_ns"]),
            }
    return {"channels": channels, **headline(channels)}


def headline(channels: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Power and hottest temperature from channel values, present only when measured."""
    out: dict[str, float] = {}
    if "power_w" in channels:
        out["power_w"] = channels["power_w"]["value"]
    temps = [c["value"] for name, c in channels.items() if name.startswith("temp_") and name.endswith("_c")]
    if temps:
        out["temperature_c"] = max(temps)
    return out


def run_view(row: dict[str, Any], state: str) -> dict[str, Any]:
    """A run as the pages show it; `state` is `run_state`'s answer."""
    total = row.get("total") if row.get("total") is not None else row.get("total_points")
    done = row.get("done")
    # Progress is sent as a point starts (done = points before it): a finished run's count is its tally.
    if row.get("outcome") is not None and row.get("points_ok") is not None:
        done = row["points_ok"] + (row.get("points_failed") or 0)
    return {
        "device": row["device"],
        "run_id": row["run_id"],
        "state": state,
        "done": done,
        "total": total,
        "point": row.get("point"),
        "outcome": row.get("outcome"),
        "points_ok": row.get("points_ok"),
        "points_failed": row.get("points_failed"),
        "error": row.get("error"),
        "started_ts": row.get("started_ts"),
        "finished_ts": row.get("finished_ts"),
        "plan_hash": row.get("plan_hash"),
    }


def live_runs(devices: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(device, run_id) of the runs that may still be running: the run each online device's status
    names (busy). An online device whose status names no run is running none (its agent says busy for
    every run, daemon or one-shot command), so a run it was cut off in is over; a device that is not
    online (offline, its last will, or one that never sent a status: records imported from files) has
    no one left to finish a run."""
    out = set()
    for row in devices:
        named = (row.get("status") or {}).get("run_id")
        if row.get("state") in ONLINE_STATES and named is not None:
            out.add((row["device"], named))
    return out


def run_state(row: dict[str, Any], live: set[tuple[str, str]]) -> str:
    """`finished` (it sent its finish record), `running` (its device may still finish it, see
    `live_runs`) or `unfinished` (it ended without a finish record: the agent was cut off, or its
    records were imported without one)."""
    if row.get("outcome") is not None:
        return "finished"
    return "running" if (row["device"], row["run_id"]) in live else "unfinished"


def run_views(runs: Sequence[dict[str, Any]], devices: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs (of `devices`' rows) as the pages show them, each with its state."""
    live = live_runs(devices)
    return [run_view(r, run_state(r, live)) for r in runs]


def device_summary(
    source: FleetSource, row: dict[str, Any], now_ns: int, cache: ChannelCache | None = None
) -> dict[str, Any]:
    status = row.get("status") or {}
    meta = row.get("meta") or {}
    age_s = (now_ns - row["last_seen_ns"]) / 1e9
    # the live column, kept at ingest; a store written before it (or a device without telemetry
    # since) is read back from the telemetry tables
    live = row.get("live")
    telemetry = stored_live(live) if live else live_telemetry(source, row["device"], cache)
    online = row.get("state") in ONLINE_STATES
    return {
        "device": row["device"],
        "state": row.get("state"),
        "online": online,
        "stale": age_s > STALE_AFTER_S,
        # whether its telemetry is live: else its values are the last ones recorded (at their wall_ns),
        # of a device offline, silent, or never online (records imported from files)
        "live": online and age_s <= STALE_AFTER_S,
        "last_seen_ns": row["last_seen_ns"],
        "last_seen_age_s": age_s,
        "run_id": status.get("run_id"),
        "detail": status.get("detail"),
        "backlog": status.get("backlog"),
        "spool_dropped": status.get("dropped"),
        "hostname": meta.get("hostname"),
        "accelerators": meta.get("accelerators", []),
        "telemetry": telemetry,
    }


def fleet(
    source: FleetSource,
    cache: ChannelCache | None = None,
    devices: Sequence[str] = (),
    now_ns: int | None = None,
) -> dict[str, Any]:
    """The fleet page: devices (all, or the named ones) with liveness and live figures, the runs not
    yet finished and the last finished ones, of those devices."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    rows = source.devices(devices)
    summaries = [device_summary(source, row, now_ns, cache) for row in rows]
    shown = {r["device"] for r in rows}
    runs = run_views([r for r in source.runs() if r["device"] in shown], rows)
    return {
        "generated_ns": now_ns,
        "devices": summaries,
        "online": sum(d["online"] for d in summaries),
        "running": [r for r in runs if r["state"] == "running"],
        "unfinished": [r for r in runs if r["state"] == "unfinished"][-20:],
        "finished": [r for r in runs if r["state"] == "finished"][-20:],
    }


def memory_capacity_mib(meta: dict[str, Any]) -> float | None:
    """Memory of the device's first accelerator, if its meta states it in bytes."""
    for accelerator in meta.get("accelerators", []):
        total = accelerator.get("memory_bytes")
        if isinstance(total, int | float) and total > 0:
            return float(total) / 2**20
    return None


def operator_shares(results: Iterable[PointResult]) -> list[dict[str, Any]]:
    """Operator shares of each profiled point and phase, as the profiler sends them in the result's
    details (`operators`: phase -> classes -> share_pct, percent of device time): the newest profile of
    each model, precision, logits mode, kernel path, length and phase (a point profiled again replaces
    its earlier profile; different kernel paths stay apart)."""
    newest: dict[tuple[str, str, str, str, int, str], dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: r.ts):
        phases = r.details.get(OPERATORS_KEY)
        if not isinstance(phases, dict):
            continue
        path = series_key(r).implementation
        for phase, shares in sorted(phases.items()):
            if not isinstance(shares, dict) or not isinstance(shares.get("classes"), dict):
                continue
            newest[(r.model, r.precision, r.logits, path, r.context_len, phase)] = {
                "model": r.model,
                "precision": r.precision,
                "logits": r.logits,
                "context_len": r.context_len,
                "phase": phase,
                "run_id": r.run_id,
                "runtime": r.implementation.get("runtime", ""),
                "implementation": path,
                "share_pct": _shares(shares["classes"]),
                "unclassified": shares.get("unclassified", []),
                "device_time_source": shares.get("device_time_source"),
            }
    shares = [newest[key] for key in sorted(newest, key=lambda k: (k[0], k[1], k[2], k[4], k[5], k[3]))]
    for entry, label in zip(shares, shares_labels(shares), strict=True):
        entry["label"] = label
    return shares


def shares_labels(shares: list[dict[str, Any]]) -> list[str]:
    """One label per bar, never two alike (plotly would stack them as one bar): model, precision,
    length and phase, then the runtime where one point was profiled on several kernel paths, and the
    path's number where their runtimes are also alike."""
    bases = [
        f"{s['model']} {s['precision']}"
        + ("" if s.get("logits", "last") == "last" else f" logits={s['logits']}")
        + f" {s['context_len']} {s['phase']}"
        for s in shares
    ]
    counts = Counter(bases)
    labels = [
        f"{b} [{s.get('runtime') or 'path'}]" if counts[b] > 1 else b
        for b, s in zip(bases, shares, strict=True)
    ]
    repeats = Counter(labels)
    seen: Counter[str] = Counter()
    out = []
    for label in labels:
        seen[label] += 1
        out.append(f"{label[:-1]} {seen[label]}]" if repeats[label] > 1 else label)
    return out


def _shares(classes: dict[str, Any]) -> dict[str, float]:
    """Each operator class's share of device time, of the classes that state it as a number (the
    record's `details` are free-form: another shape is left out, not an error for the whole page)."""
    return {
        cls: v["share_pct"]
        for cls, v in classes.items()
        if isinstance(v, dict)
        and isinstance(v.get("share_pct"), int | float)
        and not isinstance(v["share_pct"], bool)
    }


def searched_text(entry: dict[str, Any]) -> str | None:
    """A max-context search's answer as the pages show it: a lower bound when no probe up to the
    search's bound failed (`search_bounded_by`), as the report prints it."""
    tokens = entry.get("searched_tokens")
    if tokens is None:
        return None
    bound = entry.get("search_bounded_by")
    return f"≥ {tokens} tokens (no limit found up to {bound})" if bound else f"{tokens} tokens"


class UnknownDevice(LookupError):
    pass


def _device_row(source: FleetSource, device_id: str) -> dict[str, Any]:
    row = source.device(device_id)
    if row is None:
        raise UnknownDevice(device_id)
    return row


def _problems(source: FleetSource, device_id: str) -> list[dict[str, Any]]:
    """The device's recent warning and error logs (a refused or failed plan shows up here)."""
    return [
        {k: row[k] for k in ("ts", "level", "logger", "message")}
        for row in source.logs(device_id, RECENT_LOGS)
        if row["level"] in ("warning", "error")
    ]


def device_live(source: FleetSource, device_id: str, cache: ChannelCache | None = None) -> dict[str, Any]:
    """What changes every second on a device: liveness, live telemetry, its runs' progress and the
    number of command acks (a page reloads the full device view when runs or acks move)."""
    now_ns = time.time_ns()
    row = _device_row(source, device_id)
    return {
        "generated_ns": now_ns,
        "summary": device_summary(source, row, now_ns, cache),
        "runs": run_views(source.runs(device_id), [row]),
        "command_acks": len(source.command_acks(device_id)),
        "problems": len(_problems(source, device_id)),
    }


def device(
    source: FleetSource, device_id: str, cache: ChannelCache | None = None, now_ns: int | None = None
) -> dict[str, Any]:
    """The device page: liveness, meta, characterization, runs, operator shares and command acks."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    row = _device_row(source, device_id)
    results = characterization_results(source, device_id)
    meta = row.get("meta") or {}
    characterization = characterize(results, memory_capacity_mib(meta))
    for entry in characterization["max_context"]:
        entry["searched_text"] = searched_text(entry)
    return {
        "generated_ns": now_ns,
        "summary": device_summary(source, row, now_ns, cache),
        "meta": meta,
        "characterization": characterization,
        "operator_shares": operator_shares(results),
        "runs": run_views(source.runs(device_id), [row]),
        "command_acks": source.command_acks(device_id),
        "logs": _problems(source, device_id),
        "result_count": len(results),
        "reference_max_context": {
            model: reference_max_context(model)
            for model in sorted({r.model for r in results})
            if not is_shrunk_label(model)
        },
    }


def comparison(
    source: FleetSource, devices: list[str], models: list[str], metric: str, now_ns: int | None = None
) -> dict[str, Any]:
    """The compare page: one metric's summaries per device for each model and length."""
    known = [r["device"] for r in source.devices()]
    chosen = [d for d in (devices or known) if d in known]
    results = [
        r for d in chosen for r in characterization_results(source, d) if not models or r.model in models
    ]
    return {
        "generated_ns": time.time_ns() if now_ns is None else now_ns,
        "metric": metric,
        "devices": chosen,
        "known_devices": known,
        "models": sorted({r.model for r in results}),
        "rows": compare(results, metric),
    }
