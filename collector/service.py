"""The collector service: a store and the ingest that fills it, started and stopped together.

`build_service()` is the seam for front ends (`ctxscope collector run`, the dashboard, the demo): it
opens the store and prepares ingest, and the returned CollectorService can be started next to a web
server that reads the same store and subscribes to commits (`on_commit`).
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass

from ctxscope.collector.ingest import DEFAULT_CLIENT_ID, CommitCallback, Ingest, IngestCounters
from ctxscope.collector.store import Store, open_store
from ctxscope.shared.broker_access import BrokerAccess, split_host_port

# How long a thread may keep the interpreter's lock while another waits for it (CPython's default is
# 5 ms). Ingest's threads give the lock up at every socket read and SQLite step, and each time
# wait up to this long to get it back while a dashboard request computes; at 1 ms the writer
# stores 2-3x as much beside a busy thread (bench/collector/writer_contention.py).
SWITCH_INTERVAL_S = 0.001
GC_YOUNG_THRESHOLD = 20_000


@dataclass
class CollectorService:
    store: Store
    ingest: Ingest

    def start(self) -> None:
        """Start ingest, with the process's switch interval and garbage collection set for it."""
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        # Ingest allocates some tens of objects per message that die young: the young generation is
        # collected every 20,000 allocations, not every 700, so fewer of them live long enough to be
        # scanned again in the older generations.
        gc.set_threshold(max(gc.get_threshold()[0], GC_YOUNG_THRESHOLD), *gc.get_threshold()[1:])
        self.ingest.start()

    def stop(self) -> IngestCounters:
        """Finish the batch in hand, ack it, disconnect, close the store; return the final counters."""
        self.ingest.stop()
        self.store.close()
        return self.ingest.counters()


def build_service(
    broker: str,
    store_url: str,
    client_id: str = DEFAULT_CLIENT_ID,
    on_commit: CommitCallback | None = None,
    access: BrokerAccess | None = None,
    share_group: str | None = None,
) -> CollectorService:
    host, port = split_host_port(broker)
    access = access or BrokerAccess()
    store = open_store(store_url)
    try:
        ingest = Ingest(
            store,
            host,
            port,
            client_id,
            username=access.username,
            password=access.password,
            tls=access.tls,
            tls_ca=str(access.ca_file) if access.ca_file else None,
            on_commit=on_commit,
            share_group=share_group,
        )
        return CollectorService(store, ingest)
    except ValueError:
        store.close()
        raise
