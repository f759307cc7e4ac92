"""A telemetry session: runs the sampler, streams TelemetryBatch records, and summarizes phase windows.

`TelemetrySession` is the engine's PhaseObserver (agent/phases.py). While it runs, the sampler's
chunks land in a bounded ring (for summaries) and, about once a second, go out through the record
sink as columnar TelemetryBatch records, one per source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import numpy as np

from ctxscope.agent.phases import DeviceBusy, PhaseReport, PhaseWindow
from ctxscope.agent.records import RecordSink, RecordsNotWritten
from ctxscope.agent.telemetry.base import Backend
from ctxscope.agent.telemetry.detect import detect_backends, telemetry_meta
from ctxscope.agent.telemetry.ring import Chunk, SampleRing, concat
from ctxscope.agent.telemetry.sampler import Sampler
from ctxscope.agent.telemetry.summary import WindowSummarizer, busy_during, idle_metric
from ctxscope.ratelog import RateLimitedLog
from ctxscope.shared.messages import Metric, TelemetryBatch, TelemetryChannel

log = logging.getLogger(__name__)
_log = RateLimitedLog(log)
IDLE_ATTEMPTS = 4


class TelemetrySession:
    """Samples the backends at `rate_hz` in a separate process for the life of the context."""

    def __init__(
        self,
        backends: Sequence[Backend] | None = None,
        rate_hz: float = 20.0,
        sink: RecordSink | None = None,
        batch_interval_s: float = 1.0,
        min_window_s: float = 1.0,
        min_samples: int = 20,
        clock_drop_pct: float = 10.0,
        ring_seconds: float = 900.0,
    ) -> None:
        self.rate_hz = rate_hz
        self.sink = sink
        self.batch_interval_s = batch_interval_s
        self.min_window_s = min_window_s
        self.min_samples = min_samples
        self.clock_drop_pct = clock_drop_pct
        self._given = list(backends) if backends is not None else None
        self.backends: list[Backend] = []
        self.ring = SampleRing(int(ring_seconds * 1e9))
        self._pending: dict[str, list[Chunk]] = {}
        self._last_emit = time.monotonic()
        self._emit_lock = threading.Lock()
        self._sampler: Sampler | None = None
        self._errors: Sequence[str] = []
        self.emit_failures = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> TelemetrySession:
        self.backends = self._given if self._given is not None else detect_backends(self.rate_hz)
        self._sampler = Sampler(self.backends, self.rate_hz, self._on_chunk)
        self._errors = self._sampler.errors
        self._sampler.start()
        return self

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        self._emit_pending()

    def __enter__(self) -> TelemetrySession:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def errors(self) -> list[str]:
        """What the sampler reported (a source that failed to open or read); kept after stop()."""
        return list(self._errors)

    @property
    def sampler_pid(self) -> int | None:
        return self._sampler.pid if self._sampler is not None else None

    def meta(self) -> dict[str, list[str]]:
        """For DeviceMeta.telemetry: backend name -> supported metrics."""
        return telemetry_meta(self.backends)

    def rate_of(self, backend: Backend) -> float:
        return min(self.rate_hz, backend.max_rate_hz)

    # -- streaming -----------------------------------------------------------------------------

    def _on_chunk(self, chunk: Chunk) -> None:
        self.ring.add(chunk)
        if self.sink is None:
            return
        with self._emit_lock:
            self._pending.setdefault(chunk.source, []).append(chunk)
        if time.monotonic() - self._last_emit >= self.batch_interval_s:
            self._emit_pending()

    def _emit_pending(self) -> None:
        if self.sink is None:
            return
        with self._emit_lock:
            pending, self._pending = self._pending, {}
            self._last_emit = time.monotonic()
        backends = {b.name: b for b in self.backends}
        for source, chunks in pending.items():
            try:
                self.sink.emit(TelemetryBatch, **batch_fields(concat(chunks), backends[source]))
            except RecordsNotWritten as exc:
                # the run's own records go to the same file and fail alike: its command says so, once
                self.emit_failures += 1
                log.debug("telemetry batch of %s not written: %s", source, exc)
            except Exception:  # a sink failure must not stop sampling: the ring still feeds summaries
                self.emit_failures += 1
                # once a batch interval for as long as it lasts (a full disk): rate-limited
                _log.exception(
                    f"emit {source}",
                    "telemetry batch of %s could not be emitted (%d so far)",
                    source,
                    self.emit_failures,
                )

    # -- PhaseObserver ---------------------------------------------------------------------------

    @property
    def min_window_ns(self) -> int:
        """Long enough for `min_window_s` and for `min_samples` power samples at the power rate."""
        rates = [self.rate_of(b) for b in self._power_backends()] or [self.rate_hz]
        return int(max(self.min_window_s, self.min_samples / min(rates)) * 1e9)

    def _power_backends(self) -> list[Backend]:
        return [b for b in self.backends if "power_w" in b.metrics()]

    def wait_until(self, t_ns: int, timeout_s: float | None = None) -> bool:
        """Wait until every source has a sample at or after `t_ns` (monotonic); False on timeout."""
        slowest = min((self.rate_of(b) for b in self.backends), default=self.rate_hz)
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 2.0 + 3.0 / slowest)
        while time.monotonic() < deadline:
            latest = [self.ring.latest_ns(b.name) for b in self.backends]
            if all(t is not None and t >= t_ns for t in latest):
                return True
            time.sleep(0.02)
        return False

    def summarize(self, windows: Sequence[PhaseWindow]) -> PhaseReport:
        if not windows:
            return PhaseReport()
        if not self.wait_until(max(w.end_ns for w in windows)):
            log.warning("telemetry samples do not yet cover the phase windows: their figures may be absent")
        summarizer = WindowSummarizer(
            ring=self.ring,
            backends=self.backends,
            rates={b.name: self.rate_of(b) for b in self.backends},
            min_samples=self.min_samples,
            clock_drop_pct=self.clock_drop_pct,
        )
        return summarizer.report(windows)

    def idle_power(self, seconds: float, attempts: int = IDLE_ATTEMPTS) -> Metric | None:
        """Power samples taken while the caller stays idle for `seconds`, as a Metric (median and
        spread come from its samples); None where no power is sampled. A window in which the GPU was
        busy all the same (another process on it) is measured again, up to `attempts` windows in all;
        then DeviceBusy says why there is no idle power."""
        busy = None
        for attempt in range(1, attempts + 1):
            start = time.monotonic_ns()
            time.sleep(seconds)
            end = time.monotonic_ns()
            self.wait_until(end)
            busy = busy_during(self.ring, self.backends, start, end)
            if busy is None:
                rates = {b.name: self.rate_of(b) for b in self.backends}
                return idle_metric(self.ring, self._power_backends(), start, end, rates)
            log.warning("not idle (%s): idle power window %d of %d", busy, attempt, attempts)
        raise DeviceBusy(f"{busy}, in each of {attempts} idle windows of {seconds:.1f} s")


def batch_fields(chunk: Chunk, backend: Backend) -> dict[str, object]:
    """TelemetryBatch fields (without the envelope) for a chunk of one backend's samples."""
    units = backend.metrics()
    channels = {}
    for name, values in chunk.channels.items():
        dtype = backend.dtype_of(name)
        channels[name] = TelemetryChannel(
            unit=units[name], dtype=dtype, data=np.asarray(values, dtype=f"<{dtype}").tobytes()
        )
    mono_to_wall_ns = time.time_ns() - time.monotonic_ns()
    return {
        "source": backend.name,
        "mono_to_wall_ns": mono_to_wall_ns,
        "t_ns": np.asarray(chunk.t_ns, dtype="<i8").tobytes(),
        "channels": channels,
    }
