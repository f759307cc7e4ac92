"""Maximum context per model: the longest grid length that ran ok, the shortest that failed above it,
and the answer of the engine's grow-then-bisect search where one ran (its records carry
`details.kind = "max_context"` and a `max_context` metric in tokens)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ctxscope.collector.aggregate.points import PointAggregate, SeriesKey, is_search
from ctxscope.shared.messages import PointResult


@dataclass(frozen=True)
class MaxContext:
    key: SeriesKey
    family: str
    max_ok_tokens: int | None
    first_failure_tokens: int | None  # shortest failing length above max_ok_tokens, if one was tried
    failure_outcome: str | None
    searched_tokens: int | None = None  # the bisection search's largest ok length
    search_memory_cap_bytes: int | None = None
    search_limit_note: str | None = None  # e.g. the search ended on a kernel's indexing limit, not memory
    search_bounded_by: str | None = None  # the search found no limit up to this bound: a lower bound

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.key.as_dict(),
            "family": self.family,
            "max_ok_tokens": self.max_ok_tokens,
            "first_failure_tokens": self.first_failure_tokens,
            "failure_outcome": self.failure_outcome,
            "searched_tokens": self.searched_tokens,
            "search_memory_cap_bytes": self.search_memory_cap_bytes,
            "search_limit_note": self.search_limit_note,
            "search_bounded_by": self.search_bounded_by,
        }


def _model_key(key: SeriesKey) -> tuple[str, str, str, str]:
    return (key.device, key.model, key.precision, key.logits)


@dataclass(frozen=True)
class Search:
    tokens: int
    memory_cap_bytes: int | None
    limit_note: str | None
    bounded_by: str | None = None  # every probe up to this bound ran: `tokens` is a lower bound


def searches(results: Iterable[PointResult]) -> dict[tuple[str, str, str, str], Search]:
    """(device, model, precision, logits) -> the latest successful search; kernel paths are not part of
    the key since a search record states its probes' load only (no decode path, unlike a point's)."""
    found: dict[tuple[str, str, str, str], tuple[int, Search]] = {}
    for r in results:
        metric = r.metrics.get("max_context")
        if not is_search(r) or r.outcome != "ok" or metric is None:
            continue
        key = (r.device, r.model, r.precision, r.logits)
        cap, note = r.details.get("memory_cap_bytes"), r.details.get("limit_note")
        search = r.details.get("search")
        bound = search.get("bounded_by") if isinstance(search, dict) else None
        if key not in found or r.ts > found[key][0]:
            found[key] = (
                r.ts,
                Search(
                    int(max(metric.samples)),
                    cap if isinstance(cap, int) else None,
                    note if isinstance(note, str) else None,
                    bound if isinstance(bound, str) else None,
                ),
            )
    return {k: search for k, (_, search) in found.items()}


# The failure outcome of a point whose prefill ran but whose decode ran out of memory in every ok run.
DECODE_OOM = "decode oom"


def _failure_outcome(point: PointAggregate) -> str:
    """The most frequent way a failed point failed; ok runs of it failed in decode."""
    counts = Counter({o: n for o, n in point.outcomes.items() if o not in ("skipped", "ok")})
    if point.decode_ooms:
        counts[DECODE_OOM] = point.decode_ooms
    return max(counts, key=lambda o: counts[o])


def max_context(
    aggregates: Iterable[PointAggregate], results: Iterable[PointResult] = ()
) -> list[MaxContext]:
    """A grid length counts as ok when any run of it ran every phase (an ok prefill whose decode ran out of
    memory is a failure: "decode oom"); as failed when no run of it did. `results` supplies the search
    records, if any."""
    results = list(results)  # read twice: the searches, then their families
    found = searches(results)
    by_key: dict[SeriesKey, list[PointAggregate]] = {}
    for aggregate in aggregates:
        by_key.setdefault(aggregate.key, []).append(aggregate)
    table = []
    for key in sorted(by_key):
        points = sorted(by_key[key], key=lambda a: a.context_len)
        ok = [p.context_len for p in points if p.fully_ok]
        best = max(ok) if ok else None
        failed = [
            p
            for p in points
            if not p.fully_ok and set(p.outcomes) != {"skipped"} and (best is None or p.context_len > best)
        ]
        first = failed[0] if failed else None
        outcome = _failure_outcome(first) if first is not None else None
        search = found.get(_model_key(key))
        table.append(
            MaxContext(
                key,
                points[0].family,
                best,
                first.context_len if first else None,
                outcome,
                search.tokens if search else None,
                search.memory_cap_bytes if search else None,
                search.limit_note if search else None,
                search.bounded_by if search else None,
            )
        )
    covered = {_model_key(m.key) for m in table}
    families = {(r.device, r.model, r.precision, r.logits): r.family for r in results if is_search(r)}
    for (device, model, precision, logits), search in sorted(found.items()):
        if (device, model, precision, logits) not in covered:
            key = SeriesKey(device, model, precision, logits, "")
            family = families[(device, model, precision, logits)]
            table.append(
                MaxContext(
                    key,
                    family,
                    None,
                    None,
                    None,
                    search.tokens,
                    search.memory_cap_bytes,
                    search.limit_note,
                    search.bounded_by,
                )
            )
    return table
