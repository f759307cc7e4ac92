"""Per-point aggregates: device x model x precision x logits mode x kernel path x context length.

Results of the same point measured in several runs are pooled sample by sample. Results whose
outcome is not `ok` count toward the point's outcome tally, never toward its statistics; one that names
less of the path than the ok points do (it failed before its decode ran) counts in their series.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ctxscope.collector.aggregate.stats import Summary, UnitMismatch, summarize
from ctxscope.shared.messages import CALIBRATION_FAMILY, Metric, PointResult


@dataclass(frozen=True, order=True)
class SeriesKey:
    """What must be equal for measurements to be pooled: one curve against context length."""

    device: str
    model: str
    precision: str
    logits: str
    implementation: str  # "op=path;op=path", sorted: different kernel paths never pool

    @property
    def label(self) -> str:
        return f"{self.model} {self.precision}" + ("" if self.logits == "last" else f" logits={self.logits}")

    def as_dict(self) -> dict[str, str]:
        return {
            "device": self.device,
            "model": self.model,
            "precision": self.precision,
            "logits": self.logits,
            "implementation": self.implementation,
        }


@dataclass
class PointAggregate:
    key: SeriesKey
    family: str
    context_len: int
    outcomes: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, Summary] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    decode_ooms: int = 0  # of the ok runs, those whose prefill ran but whose decode ran out of memory

    @property
    def fully_ok(self) -> bool:
        """Some run of this point ran every phase it measured: an ok prefill whose decode ran out of
        memory does not count (the point's `details.decode_outcome`)."""
        return self.outcomes.get("ok", 0) > self.decode_ooms

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.key.as_dict(),
            "family": self.family,
            "context_len": self.context_len,
            "outcomes": dict(self.outcomes),
            "decode_ooms": self.decode_ooms,
            "runs": list(self.runs),
            "metrics": {name: summary.as_dict() for name, summary in sorted(self.metrics.items())},
            "problems": list(self.problems),
        }


# Between the sorted `op=path` pairs of a series' implementation: a ";" before the next identifier
# and "=" (a path's own text may hold "; " followed by words).
_PAIR_SEPARATOR = re.compile(r";(?=[A-Za-z_][\w./-]*=)")


# The parts of a kernel path a reader tells paths apart by first; the others only where these do not.
HEADLINE_PATH_KEYS = ("runtime", "attention", "decode_path")


def path_labels(keys: Iterable[SeriesKey]) -> dict[SeriesKey, str]:
    """What tells apart the series of one device, model, precision and logits mode that ran on several
    kernel paths ("" for a model measured on one path): the parts in which their paths differ, the
    headline ones (runtime, attention, decode path) first, then others one by one only while two paths
    still read alike. A series that names no path (its run failed before loading) is "no path named"."""
    groups: dict[tuple[str, str, str, str], set[SeriesKey]] = defaultdict(set)
    for key in keys:
        groups[(key.device, key.model, key.precision, key.logits)].add(key)
    labels: dict[SeriesKey, str] = {}
    for group in groups.values():
        paths = {key: _pairs(key.implementation) for key in group}
        named = [path for path in paths.values() if path]
        chosen = _telling_parts(named)
        for key, path in paths.items():
            if len(group) == 1:
                labels[key] = ""
            elif not path:
                labels[key] = "no path named"
            else:
                labels[key] = _label(path, chosen)
    return labels


def _telling_parts(paths: list[dict[str, str]]) -> list[str]:
    """The operations whose paths tell these paths apart: the differing headline ones, then each other
    differing one that tells more of them apart, until all read differently."""
    ops = {op for path in paths for op in path}
    differing = [op for op in sorted(ops) if len({path.get(op) for path in paths}) > 1]
    chosen = [op for op in HEADLINE_PATH_KEYS if op in differing]

    def distinct(parts: list[str]) -> int:
        return len({_label(path, parts) for path in paths})

    for op in differing:
        if distinct(chosen) == len(paths):
            break
        if op not in chosen and distinct([*chosen, op]) > distinct(chosen):
            chosen.append(op)
    return chosen


def _pairs(implementation: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in _PAIR_SEPARATOR.split(implementation) if "=" in pair)


def _label(path: dict[str, str], ops: Iterable[str]) -> str:
    return ";".join(f"{op}={path.get(op, '-')}" for op in ops)


def _names_the_path(key: str) -> bool:
    """False for an attention trial's own time (`attention_trial_<phase>/<backend>`), which agents
    before the trials moved to `details` kept in the implementation: it differs from run to run and
    would keep every run of one path in a series of its own."""
    return not (key.startswith("attention_trial_") and "/" in key)


def _path(result: PointResult) -> dict[str, str]:
    return {k: v for k, v in result.implementation.items() if _names_the_path(k)}


def series_key(result: PointResult) -> SeriesKey:
    implementation = ";".join(f"{k}={v}" for k, v in sorted(_path(result).items()))
    return SeriesKey(result.device, result.model, result.precision, result.logits, implementation)


def _series_keys(results: list[PointResult]) -> list[SeriesKey]:
    """Each result's series. A point that failed names only what ran before it failed (the load's
    paths, no decode path): it counts in the one series of ok points of its device, model, precision
    and logits whose path holds all it names; where none or several do, in a series of its own."""
    keys = [series_key(r) for r in results]
    ok_paths: dict[tuple[str, str, str, str], dict[SeriesKey, set[tuple[str, str]]]] = defaultdict(dict)
    for result, key in zip(results, keys, strict=True):
        if result.outcome == "ok":
            ok_paths[(key.device, key.model, key.precision, key.logits)][key] = set(_path(result).items())
    for i, (result, key) in enumerate(zip(results, keys, strict=True)):
        paths = ok_paths.get((key.device, key.model, key.precision, key.logits), {})
        if result.outcome == "ok" or key in paths:
            continue
        named = set(_path(result).items())
        homes = [k for k, items in paths.items() if named <= items]
        if len(homes) == 1:
            keys[i] = homes[0]
    return keys


SEARCH_KIND = "max_context"
PROFILE_KIND = "profile"


def is_search(result: PointResult) -> bool:
    """A maximum-context search's record: its length is the search's answer, not a measured point."""
    return result.details.get("kind") == SEARCH_KIND


def is_profile(result: PointResult) -> bool:
    """An operator profile's record: shares of device time under the profiler, not a curve point
    (the operator-shares view reads it). Agents before the `kind` tag sent a profile as `operators`
    with only the profiler's own metrics (`profile_<phase>_...`), as the committed H200 profiles are."""
    if result.details.get("kind") == PROFILE_KIND:
        return True
    return isinstance(result.details.get("operators"), dict) and all(
        name.startswith("profile_") for name in result.metrics
    )


def is_calibration(result: PointResult) -> bool:
    """A figure of `agent calibrate`: a benchmark, not a model; the prediction view reads these, no
    characterization (points, aggregates, crossovers, comparisons) pools them."""
    return result.family == CALIBRATION_FAMILY


def aggregate_points(results: Iterable[PointResult]) -> list[PointAggregate]:
    """One aggregate per (series, context length), sorted by series then length; maximum-context
    search records (see `maxctx`) and operator profiles are left out."""
    outcomes: dict[tuple[SeriesKey, int], Counter[str]] = defaultdict(Counter)
    samples: dict[tuple[SeriesKey, int], dict[str, list[Metric]]] = defaultdict(lambda: defaultdict(list))
    families: dict[tuple[SeriesKey, int], str] = {}
    runs: dict[tuple[SeriesKey, int], list[str]] = defaultdict(list)
    decode_ooms: Counter[tuple[SeriesKey, int]] = Counter()
    points_only = [r for r in results if not (is_search(r) or is_profile(r))]
    for result, key in zip(points_only, _series_keys(points_only), strict=True):
        point = (key, result.context_len)
        outcomes[point][result.outcome] += 1
        families[point] = result.family
        if result.run_id not in runs[point]:
            runs[point].append(result.run_id)
        if result.outcome == "ok":
            if result.details.get("decode_outcome") == "oom":
                decode_ooms[point] += 1
            for name, metric in result.metrics.items():
                samples[point][name].append(metric)
    aggregates = []
    for point in sorted(outcomes):
        key, context_len = point
        metrics: dict[str, Summary] = {}
        problems: list[str] = []
        for name, measured in samples[point].items():
            try:
                metrics[name] = summarize(measured)
            except UnitMismatch as exc:  # one agent's bad units must not hide the rest of the device
                problems.append(f"{name} left out: {exc}")
        aggregates.append(
            PointAggregate(
                key,
                families[point],
                context_len,
                outcomes[point],
                metrics,
                runs[point],
                problems,
                decode_ooms[point],
            )
        )
    return aggregates


def curve(aggregates: Iterable[PointAggregate], key: SeriesKey, metric: str) -> list[tuple[int, Summary]]:
    """(context length, summary) of one metric along one series, by length; lengths without it left out."""
    points = [(a.context_len, a.metrics[metric]) for a in aggregates if a.key == key and metric in a.metrics]
    return sorted(points, key=lambda p: p[0])
