"""Kernel name -> operator class, from the ordered table in kernel_classes.json, and the shares.

Shares are taken over the total device time of the events given, so they sum to 100%. A kernel that
no rule matches counts as `other` and is listed by name with its time and count, never dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

TABLE_RESOURCE = "kernel_classes.json"
UNMATCHED_CLASS = "other"


@dataclass(frozen=True)
class Rule:
    cls: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class ScopeRule:
    cls: str
    pattern: re.Pattern[str]
    overrides: frozenset[str]


@dataclass(frozen=True)
class ModuleRule:
    """Which modules the profiling pass labels with a host range `ctxscope::module::<label>`."""

    label: str
    attribute: re.Pattern[str] | None
    class_name: re.Pattern[str] | None

    def matches(self, attribute: str, class_name: str) -> bool:
        if self.attribute is not None and self.attribute.search(attribute):
            return True
        return self.class_name is not None and bool(self.class_name.search(class_name))


@dataclass(frozen=True)
class DeviceEvent:
    """One unit of device work: a kernel, a copy or a memset (or, without a GPU, a CPU op's self time).

    `scopes` are the names of the host ranges (aten ops, labelled modules, passes) that were open on
    the launching thread when it was launched, outermost first.
    """

    name: str
    start_ns: int
    dur_ns: int
    stream: int | None = None
    scopes: tuple[str, ...] = ()


class KernelClassifier:
    """Applies the rule table: name rules first (first match wins), then scope reassignments."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.classes: dict[str, str] = dict(table["classes"])
        self.rules = [Rule(r["class"], re.compile(r["regex"])) for r in table["rules"]]
        self.scope_rules = [
            ScopeRule(s["class"], re.compile(s["regex"]), frozenset(s["overrides"])) for s in table["scopes"]
        ]
        self.module_rules = [
            ModuleRule(
                m["label"],
                re.compile(m["attribute"]) if "attribute" in m else None,
                re.compile(m["class"]) if "class" in m else None,
            )
            for m in table["modules"]
        ]
        named = {r.cls for r in self.rules} | {s.cls for s in self.scope_rules} | {UNMATCHED_CLASS}
        unknown = named - set(self.classes)
        if unknown:
            raise ValueError(f"classes used by rules but not described: {sorted(unknown)}")

    @classmethod
    def default(cls) -> KernelClassifier:
        return _default_classifier()

    def by_name(self, name: str) -> str | None:
        """The class of a kernel name alone, or None when no rule matches."""
        return next((rule.cls for rule in self.rules if rule.pattern.search(name)), None)

    def classify(self, name: str, scopes: Sequence[str] = ()) -> str:
        cls = self.by_name(name) or UNMATCHED_CLASS
        for rule in self.scope_rules:
            if cls in rule.overrides and any(rule.pattern.search(scope) for scope in scopes):
                return rule.cls
        return cls


@cache
def _default_classifier() -> KernelClassifier:
    text = resources.files(__package__).joinpath(TABLE_RESOURCE).read_text(encoding="utf-8")
    return KernelClassifier(json.loads(text))


@dataclass(frozen=True)
class ClassShare:
    cls: str
    time_ns: int
    count: int
    share_pct: float


@dataclass(frozen=True)
class Unclassified:
    name: str
    time_ns: int
    count: int


@dataclass(frozen=True)
class OperatorShares:
    """Device time per operator class over all events of a pass; shares sum to 100%."""

    total_ns: int
    classes: tuple[ClassShare, ...]
    unclassified: tuple[Unclassified, ...]
    events: int

    def share(self, cls: str) -> float:
        return next((c.share_pct for c in self.classes if c.cls == cls), 0.0)

    def time_ns(self, cls: str) -> int:
        return next((c.time_ns for c in self.classes if c.cls == cls), 0)

    def to_details(self) -> dict[str, Any]:
        return {
            "total_ms": self.total_ns / 1e6,
            "events": self.events,
            "classes": {
                c.cls: {"share_pct": c.share_pct, "time_ms": c.time_ns / 1e6, "kernels": c.count}
                for c in self.classes
            },
            "unclassified": [
                {"name": u.name, "time_ms": u.time_ns / 1e6, "count": u.count} for u in self.unclassified
            ],
        }


def operator_shares(events: Iterable[DeviceEvent], classifier: KernelClassifier) -> OperatorShares:
    time_ns: dict[str, int] = {}
    count: dict[str, int] = {}
    unmatched: dict[str, list[int]] = {}
    n = 0
    for event in events:
        n += 1
        cls = classifier.classify(event.name, event.scopes)
        time_ns[cls] = time_ns.get(cls, 0) + event.dur_ns
        count[cls] = count.get(cls, 0) + 1
        if cls == UNMATCHED_CLASS and classifier.by_name(event.name) is None:
            slot = unmatched.setdefault(event.name, [0, 0])
            slot[0] += event.dur_ns
            slot[1] += 1
    total = sum(time_ns.values())
    classes = tuple(
        ClassShare(cls, t, count[cls], 100.0 * t / total if total else 0.0)
        for cls, t in sorted(time_ns.items(), key=lambda kv: -kv[1])
    )
    unclassified = tuple(
        Unclassified(name, t, c) for name, (t, c) in sorted(unmatched.items(), key=lambda kv: -kv[1][0])
    )
    return OperatorShares(total_ns=total, classes=classes, unclassified=unclassified, events=n)
