"""The collector under test, in its own process (so its CPU use is measured alone): ingest + store +
dashboard on a free port. Prints `URL <url>` when serving; stops on SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading

from ctxscope.collector.web.server import Dashboard


def main(broker: str, store_url: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    dashboard = Dashboard(broker, store_url).start()
    if not dashboard.service.ingest.wait_connected(10):
        raise SystemExit("collector could not connect to the broker")
    print("URL", dashboard.web.url, flush=True)
    stop.wait()
    dashboard.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
