"""`ctxscope collector run`: ingest records from the broker into the store until Ctrl-C or SIGTERM.

`build_service()` is the seam for other front ends: it opens the store and prepares ingest, and the
returned CollectorService can be started next to a web server that reads the same store and
subscribes to commits (`on_commit`).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from types import FrameType

import click

from ctxscope.collector.ingest import DEFAULT_CLIENT_ID, CommitCallback, Ingest, IngestCounters
from ctxscope.collector.store import Store, open_store
from ctxscope.paths import state_dir

log = logging.getLogger(__name__)


@dataclass
class CollectorService:
    store: Store
    ingest: Ingest

    def start(self) -> None:
        self.ingest.start()

    def stop(self) -> IngestCounters:
        """Finish the batch in hand, ack it, disconnect, close the store; return the final counters."""
        self.ingest.stop()
        self.store.close()
        return self.ingest.counters()


def parse_broker(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"broker address {address!r} is not HOST:PORT")
    return host, int(port)


def default_store_url() -> str:
    return f"sqlite:///{state_dir() / 'collector.sqlite'}"


def build_service(
    broker: str,
    store_url: str,
    client_id: str = DEFAULT_CLIENT_ID,
    on_commit: CommitCallback | None = None,
) -> CollectorService:
    host, port = parse_broker(broker)
    store = open_store(store_url)
    try:
        return CollectorService(store, Ingest(store, host, port, client_id, on_commit=on_commit))
    except ValueError:
        store.close()
        raise


@click.command()
@click.option("--broker", default="127.0.0.1:1883", show_default=True, help="MQTT broker as HOST:PORT.")
@click.option("--store", "store_url", default=None, help="sqlite:///PATH or postgresql://USER@HOST/DB.")
@click.option(
    "--client-id",
    default=DEFAULT_CLIENT_ID,
    show_default=True,
    help="MQTT client id naming the persistent session: keep it stable across restarts, and not a device id.",
)
@click.option(
    "--web",
    default="127.0.0.1:8321",
    show_default=True,
    help="serve the dashboard on HOST:PORT (needs the `collector` extra); 0.0.0.0 exposes it to the network",
)
@click.option("--no-web", is_flag=True, help="ingest only, no dashboard")
@click.option(
    "--raw-days",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="keep raw telemetry this many days, then keep --rollup-s rollups (checked hourly)",
)
@click.option("--rollup-s", type=click.IntRange(min=1), default=60, show_default=True, help="rollup width")
@click.option("--keep-raw", is_flag=True, help="never prune raw telemetry")
def run(
    broker: str,
    store_url: str | None,
    client_id: str,
    web: str,
    no_web: bool,
    raw_days: float,
    rollup_s: int,
    keep_raw: bool,
) -> None:
    """Ingest records from the broker into the store (and serve the dashboard) until Ctrl-C or SIGTERM."""
    from ctxscope.collector.store.retention import RetentionLoop, RetentionPolicy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = store_url or default_store_url()
    policy = RetentionPolicy(raw_days, rollup_s)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if no_web:
            service = build_service(broker, url, client_id)
            service.start()
            retention = None if keep_raw else RetentionLoop(service.store, policy).start()
            click.echo(f"collector: broker {broker}, store {url} (Ctrl-C stops)", err=True)
            stop.wait()
            if retention is not None:
                retention.stop()
            counters = service.stop()
        else:
            from ctxscope.collector.web.server import Dashboard

            web_host, web_port = parse_broker(web)
            dashboard = Dashboard(broker, url, web_host, web_port, client_id).start()
            retention = None if keep_raw else RetentionLoop(dashboard.service.store, policy).start()
            click.echo(
                f"collector: broker {broker}, store {url}, dashboard {dashboard.web.url}/ (Ctrl-C stops)",
                err=True,
            )
            stop.wait()
            if retention is not None:
                retention.stop()
            dashboard.stop()
            counters = dashboard.service.ingest.counters()
    except (ValueError, RuntimeError) as exc:  # bad address, store URL or client id; web port in use
        raise click.ClickException(str(exc)) from exc
    rejected = sum(counters.rejected.values())
    click.echo(
        f"collector stopped: {counters.received} received, {counters.stored} stored, "
        f"{counters.duplicates} duplicates, {rejected} rejected",
        err=True,
    )
