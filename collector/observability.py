"""Prometheus metrics and health checks of a collector, for fleet operators.

A custom collector for `prometheus-client` reads everything at scrape time, so no value is ever
stale and ingest pays nothing between scrapes: the ingest counters (received, stored, duplicates,
rejected by reason, store errors), the ingest backlog and broker connection, and per device its
online state, seconds since it was last heard, its spool backlog, power and hottest temperature.
Units are in the metric names, as Prometheus's conventions ask. `health()` and `ready()` answer
`/healthz` (the process serves) and `/readyz` (the store answers and ingest holds its broker
subscriptions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ctxscope.collector.ingest import IngestCounters
from ctxscope.collector.readmodel import views
from ctxscope.collector.readmodel.source import FleetSource

PREFIX = "ctxscope_collector"


class IngestState(Protocol):
    """What metrics need of a running ingest (the Ingest class provides it)."""

    @property
    def connected(self) -> bool: ...

    @property
    def backlog(self) -> int: ...

    def counters(self) -> IngestCounters: ...

    @property
    def broker_cert_not_after_ns(self) -> int | None: ...


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "checks": self.checks}


class FleetMetrics(Collector):
    """Reads the ingest's counters and the store's devices at every scrape."""

    def __init__(
        self,
        source: FleetSource,
        ingest: Callable[[], IngestState | None],
        channels: views.ChannelCache | None = None,
    ) -> None:
        self.source = source
        self.ingest = ingest
        self.channels = channels or views.ChannelCache()

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest_metrics()
        yield from self._device_metrics()

    def _ingest_metrics(self) -> Iterator[Metric]:
        ingest = self.ingest()
        if ingest is None:
            return
        counters = ingest.counters()
        for name, value, text in (
            ("received", counters.received, "Messages taken from the broker."),
            ("stored", counters.stored, "Records stored."),
            (
                "duplicates",
                counters.duplicates,
                "Redelivered records already stored (by device, stream, seq).",
            ),
            ("batches", counters.batches, "Transactions committed by the ingest writer."),
            ("store_errors", counters.store_errors, "Failed store transactions (each retried)."),
            (
                "store_upkeep_failures",
                counters.store_upkeep_failures,
                "Failed passes of the store's staging merge or retention (each retried).",
            ),
        ):
            yield CounterMetricFamily(f"{PREFIX}_ingest_{name}", text, value=value)
        rejected = CounterMetricFamily(
            f"{PREFIX}_ingest_rejected", "Messages rejected, by reason.", labels=["reason"]
        )
        for reason, count in sorted(counters.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield GaugeMetricFamily(
            f"{PREFIX}_ingest_backlog_messages",
            "Messages received from the broker and not yet stored (ingest lag).",
            value=ingest.backlog,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_broker_connected",
            "1 while ingest holds its broker subscriptions.",
            value=ingest.connected,
        )
        not_after = ingest.broker_cert_not_after_ns
        if not_after is not None:  # no TLS, or not yet connected: absent, not 0
            yield GaugeMetricFamily(
                f"{PREFIX}_broker_cert_expiry_timestamp_seconds",
                "When the TLS certificate the broker presented expires (Unix time); renew it before then "
                "with `ctxscope collector renew-cert`.",
                value=not_after / 1e9,
            )

    def _device_metrics(self) -> Iterator[Metric]:
        now_ns = time.time_ns()
        online = GaugeMetricFamily(
            "ctxscope_device_online", "1 while the device is online or busy.", labels=["device"]
        )
        seen = GaugeMetricFamily(
            "ctxscope_device_last_seen_age_seconds",
            "Seconds since the collector last heard from the device.",
            labels=["device"],
        )
        backlog = GaugeMetricFamily(
            "ctxscope_device_spool_backlog_records",
            "Records waiting in the device's spool, as its last status said.",
            labels=["device"],
        )
        dropped = GaugeMetricFamily(
            "ctxscope_device_spool_dropped_records",
            "Telemetry and log records the device's spool has dropped since it was made (full spool or"
            " disk), as its last status said.",
            labels=["device"],
        )
        power = GaugeMetricFamily("ctxscope_device_power_watts", "Latest power sample.", labels=["device"])
        temperature = GaugeMetricFamily(
            "ctxscope_device_temperature_celsius", "Latest hottest temperature sensor.", labels=["device"]
        )
        for row in self.source.devices():
            summary = views.device_summary(self.source, row, now_ns, self.channels)
            device = [summary["device"]]
            online.add_metric(device, float(summary["online"]))
            seen.add_metric(device, summary["last_seen_age_s"])
            if summary["backlog"] is not None:
                backlog.add_metric(device, summary["backlog"])
            if summary["spool_dropped"] is not None:
                dropped.add_metric(device, summary["spool_dropped"])
            telemetry = summary["telemetry"]
            if "power_w" in telemetry:
                power.add_metric(device, telemetry["power_w"])
            if "temperature_c" in telemetry:
                temperature.add_metric(device, telemetry["temperature_c"])
        yield from (online, seen, backlog, dropped, power, temperature)


def registry(source: FleetSource, ingest: Callable[[], IngestState | None]) -> CollectorRegistry:
    """A registry of its own (not the process-wide default), so several apps in one process never clash."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetMetrics(source, ingest))
    return reg


def ready(source: FleetSource, ingest: IngestState | None) -> Readiness:
    """Ready when the store answers a query and (if this process ingests) the broker subscriptions hold."""
    checks: dict[str, str] = {}
    try:
        source.devices()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"{type(exc).__name__}: {exc}"[:300]
    if ingest is not None:
        checks["broker"] = "ok" if ingest.connected else "not connected"
    return Readiness(all(v == "ok" for v in checks.values()), checks)
