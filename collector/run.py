"""`ctxscope collector run`: ingest records from the broker into the store, and serve the dashboard,
until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ctxscope.collector.security.broker_config import collector_user
from ctxscope.collector.security.options import (
    access_options,
    enforce_safe_broker,
    resolve_access,
    resolve_share_group,
)
from ctxscope.collector.service import build_service
from ctxscope.collector.settings import default_store_url
from ctxscope.collector.store.retention import RetentionLoop, RetentionPolicy, coarse_options
from ctxscope.collector.store.sqlite import MERGE_INTERVAL_S
from ctxscope.hostport import HOST_PORT
from ctxscope.shared.broker_access import split_host_port

log = logging.getLogger(__name__)


def _file_option(flag: str, env: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An option naming a file of secrets, also read from the environment variable `env`."""
    return click.option(
        flag,
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=env,
        default=None,
        help=f"{help} [env {env}]",
    )


@click.command()
@click.option(
    "--broker", type=HOST_PORT, default="127.0.0.1:1883", show_default=True, help="MQTT broker as HOST:PORT."
)
@click.option(
    "--store",
    "store_url",
    default=None,
    help="sqlite:///PATH or postgresql://USER@HOST/DB. A SQLite URL may end in ?merge_interval_s=SECONDS "
    f"(default {MERGE_INTERVAL_S:g}): how long records stay staged before their merge; longer writes fewer "
    "bytes per record (docs/operations.md) and reads one device's records more slowly.",
)
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id naming the persistent session: keep it stable across restarts, and not a device "
    "id (default: the collector identity's user name, ctxscope_collector without --collector)",
)
@click.option(
    "--collector",
    "collector_name",
    default=None,
    metavar="NAME",
    help="with --site, connect as the collector identity NAME added by `ctxscope collector enroll "
    "--collector NAME` (one identity per collector of a share group)",
)
@click.option(
    "--web",
    type=HOST_PORT,
    default="127.0.0.1:8321",
    show_default=True,
    help="serve the dashboard on HOST:PORT (needs the `collector` extra); 0.0.0.0 exposes it to the network",
)
@click.option(
    "--share-group",
    default=None,
    help="ingest through the MQTT shared subscription $share/NAME/...: several collectors (each its own "
    "--client-id, one PostgreSQL --store) split the fleet's records; each still gets every device's state. "
    "The group's name on the broker also holds a secret, out of the devices' reach: the site's with --site, "
    "else $CTXSCOPE_SHARE_GROUP_SECRET (required then)",
)
@click.option("--no-web", is_flag=True, help="ingest only, no dashboard")
@_file_option(
    "--web-credentials",
    "CTXSCOPE_WEB_CREDENTIALS",
    "dashboard login: file of users and scrypt hashes (`ctxscope collector passwd`); "
    "required unless the dashboard listens on loopback",
)
@click.option(
    "--web-allowed-host",
    "web_allowed_hosts",
    multiple=True,
    help="another host name the dashboard answers to (repeatable); loopback, the bind address and "
    "this machine's names always are",
)
@click.option("--web-insecure", is_flag=True, help="serve beyond loopback without a login (not advised)")
@_file_option(
    "--metrics-token-file",
    "CTXSCOPE_METRICS_TOKEN_FILE",
    "a file whose first line is a token (32 characters or more) that opens /metrics to a scraper "
    "sending `Authorization: Bearer <token>`, without a login",
)
@click.option("--web-secure-cookie", is_flag=True, help="mark the session cookie Secure (behind a TLS proxy)")
@click.option(
    "--raw-days",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="keep raw telemetry this many days, then keep --rollup-s rollups (checked hourly)",
)
@click.option("--rollup-s", type=click.IntRange(min=1), default=60, show_default=True, help="rollup width")
@click.option("--keep-raw", is_flag=True, help="never prune raw telemetry")
@coarse_options
@access_options
@click.option(
    "--broker-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="the broker's mosquitto.conf, checked for settings that drop records (default with --site: "
    "the site's)",
)
@click.option(
    "--require-safe-broker",
    is_flag=True,
    help="refuse to start when the broker accepts anonymous clients or its settings can drop records "
    "or cannot be verified (default: warn)",
)
def run(
    broker: str,
    store_url: str | None,
    client_id: str | None,
    collector_name: str | None,
    share_group: str | None,
    web: str,
    no_web: bool,
    web_credentials: Path | None,
    web_allowed_hosts: tuple[str, ...],
    web_insecure: bool,
    metrics_token_file: Path | None,
    web_secure_cookie: bool,
    raw_days: float,
    rollup_s: int,
    keep_raw: bool,
    coarse_after_days: float,
    coarse_s: int,
    broker_config: Path | None,
    require_safe_broker: bool,
    **access_params: Any,
) -> None:
    """Ingest records from the broker into the store (and serve the dashboard) until Ctrl-C or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = store_url or default_store_url()
    try:
        policy = RetentionPolicy(raw_days, rollup_s, coarse_after_days, coarse_s)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    host, port = split_host_port(broker)  # HOST_PORT checked it
    site_dir: Path | None = access_params["site_dir"]
    if collector_name is not None and site_dir is None:
        raise click.UsageError("--collector NAME takes the identity from a site: add --site DIR")
    try:
        user = collector_user(collector_name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    client_id = client_id or user
    access = resolve_access(host, user, "the collector", access_params)
    share_group = resolve_share_group(share_group, site_dir)
    enforce_safe_broker(host, port, access, broker_config, site_dir, require_safe_broker)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if no_web:
            service = build_service(broker, url, client_id, access=access, share_group=share_group)
            service.start()
            retention = None if keep_raw else RetentionLoop(service.store, policy).start()
            click.echo(f"collector: broker {broker}, store {url} (Ctrl-C stops)", err=True)
            stop.wait()
            if retention is not None:
                retention.stop()
            counters = service.stop()
        else:
            from ctxscope.collector.web.security import web_security
            from ctxscope.collector.web.server import Dashboard

            web_host, web_port = split_host_port(web)
            security = web_security(
                web_host,
                web_credentials,
                web_allowed_hosts,
                web_insecure,
                web_secure_cookie,
                metrics_token_file,
            )
            dashboard = Dashboard(
                broker, url, web_host, web_port, client_id, access, security, share_group=share_group
            ).start()
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
