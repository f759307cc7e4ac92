"""Where the agent's records go: the sink interface between producers and the transport.

Producers (sweep engine, telemetry sampler, daemon) build message bodies; a sink adds the envelope
(device, stream, seq, ts) and takes ownership. The durable sink is the transport's spool; the
in-memory sink serves runs without a broker and tests.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol, TextIO, TypeVar

from ctxscope.shared.ids import new_stream_id, validate_device_id
from ctxscope.shared.messages import Envelope

M = TypeVar("M", bound=Envelope)


class RecordSink(Protocol):
    def emit(self, message_cls: type[M], **fields: Any) -> M:
        """Stamp the envelope on a new record, keep it, and return it."""
        ...


class MemorySink:
    """Keeps records in a list, in order: for runs without a broker, and for tests. With `keep=False`
    it only stamps them (a subclass writes them out), so a long run does not grow in memory."""

    def __init__(self, device: str = "local", stream: str | None = None, *, keep: bool = True) -> None:
        self.device = validate_device_id(device)
        self.stream = stream or new_stream_id()
        self.records: list[Envelope] = []
        self.keep = keep
        self._seq = 0
        self._lock = threading.Lock()

    def emit(self, message_cls: type[M], **fields: Any) -> M:
        with self._lock:
            self._seq += 1
            record = message_cls(
                device=self.device, stream=self.stream, seq=self._seq, ts=time.time_ns(), **fields
            )
            if self.keep:
                self.records.append(record)
            return record

    def of_kind(self, kind: str) -> list[Envelope]:
        with self._lock:
            return [r for r in self.records if getattr(r, "kind", None) == kind]


class RecordsNotWritten(RuntimeError):
    """A record could not be written out (a full disk, a closed pipe): the run's records are lost from
    there on, so the run cannot go on; the message names where and the system's reason."""


class JsonLinesSink(MemorySink):
    """Stamps records like a memory sink, keeps none, and appends each to a JSON-lines file."""

    def __init__(self, stream: TextIO | None, device: str) -> None:
        super().__init__(device=device, keep=False)
        self.out = stream

    def emit(self, message_cls: type[M], **fields: Any) -> M:
        record = super().emit(message_cls, **fields)
        if self.out is not None:
            try:
                self.out.write(record.model_dump_json() + "\n")
                self.out.flush()
            except OSError as exc:
                where = getattr(self.out, "name", "the records stream")
                why = exc.strerror or str(exc)
                raise RecordsNotWritten(f"records could not be written to {where}: {why}") from exc
        return record
