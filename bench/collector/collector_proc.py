"""The collector under test, in its own process (so its CPU use is measured alone): ingest + store +
dashboard on a free port. Prints `URL <url>` when serving; on SIGTERM stops and prints `COUNTERS
<json>` (received, stored, duplicates, rejected, store errors). `--client-id` and `--share-group`
make it one of several collectors sharing ingest.

    python bench/collector/collector_proc.py HOST:PORT STORE_URL [--client-id ID] [--share-group NAME]
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

from ctxscope.collector.ingest import DEFAULT_CLIENT_ID
from ctxscope.collector.web.server import Dashboard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker")
    parser.add_argument("store_url")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--share-group", default=None)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    dashboard = Dashboard(
        args.broker, args.store_url, client_id=args.client_id, share_group=args.share_group
    ).start()
    if not dashboard.service.ingest.wait_connected(10):
        raise SystemExit("collector could not connect to the broker")
    print("URL", dashboard.web.url, flush=True)
    stop.wait()
    dashboard.stop()
    counters = dashboard.service.ingest.counters()
    summary = {
        "received": counters.received,
        "stored": counters.stored,
        "duplicates": counters.duplicates,
        "rejected": sum(counters.rejected.values()),
        "store_errors": counters.store_errors,
    }
    print("COUNTERS", json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
