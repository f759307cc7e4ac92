"""`ctxscope collector enroll DEVICE --out DIR` and `ctxscope collector revoke DEVICE`; with
`--collector NAME` instead of DEVICE, the same for another collector identity of a share group.
`ctxscope collector renew-cert` issues the broker a new certificate before its old one expires."""

from __future__ import annotations

import datetime
import os
import shlex
from pathlib import Path

import click

from ctxscope.collector.security.broker_config import TLS_PORT
from ctxscope.collector.security.site import Site, SiteError, default_hostnames, device_facing_hostname
from ctxscope.paths import state_dir
from ctxscope.shared.ids import InvalidIdentifier


def default_site() -> Path:
    return Path(os.environ.get("CTXSCOPE_SITE") or state_dir() / "site")


site_option = click.option(
    "--site",
    "site_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="site directory: CA, broker files, identities (default: $CTXSCOPE_SITE, else <state dir>/site)",
)


def _reload_note(reloaded: bool, site: Site) -> str:
    if reloaded:
        return "the broker was told to reload (SIGHUP)"
    # Not `kill -HUP $(cat mosquitto.pid)`: a pid file that names no broker of this site may name any
    # process by now.
    conf = site.broker_dir / "mosquitto.conf"
    return (
        f"the broker was NOT reloaded: {site.broker_dir}/mosquitto.pid names no running mosquitto with "
        f"{conf}. Reload it to apply this change: on this host "
        f"`kill -HUP $(pgrep -f {shlex.quote(f'mosquitto -c {conf}')})`; the compose broker rereads the "
        "site's files within 2 s by itself (a broker started later reads them anyway)"
    )


collector_option = click.option(
    "--collector",
    "collector_name",
    default=None,
    metavar="NAME",
    help="instead of a device, a further collector identity (MQTT user ctxscope_collector_NAME), for "
    "one more collector of a --share-group",
)


def _one_of(device: str | None, collector_name: str | None) -> None:
    if (device is None) == (collector_name is None):
        raise click.UsageError("name either a DEVICE or --collector NAME")


@click.command("enroll")
@click.argument("device", required=False)
@collector_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="bundle folder")
@click.option(
    "--broker-host",
    default=None,
    help="the broker's address as the device reaches it (default: this host's name); a new site's "
    "certificate is issued for it, an existing site's must name it (`renew-cert --broker-host` adds one)",
)
@click.option("--broker-port", type=click.IntRange(1, 65535), default=TLS_PORT, show_default=True)
@click.option(
    "--device-dir", default="/etc/ctxscope", show_default=True, help="where the bundle goes on the device"
)
@site_option
def enroll(
    device: str | None,
    collector_name: str | None,
    out: Path | None,
    broker_host: str | None,
    broker_port: int,
    device_dir: str,
    site_dir: Path | None,
) -> None:
    """Give DEVICE its own broker credentials and write its bundle (agent.toml + ca.crt) to --out; or,
    with --collector NAME, add a collector identity to the site (its password stays in the site).

    Creates the site (CA, broker certificate, ACL, collector and operator identities, mosquitto.conf)
    on first use."""
    _one_of(device, collector_name)
    if collector_name is None and out is None:
        raise click.UsageError("enrolling a device needs --out DIR for its bundle")
    site = Site(site_dir or default_site())
    host = broker_host or device_facing_hostname()
    if host is None:
        raise click.UsageError(
            "this host's names are loopback names, which no device reaches: pass --broker-host with the "
            "name or address the devices reach the broker by"
        )
    try:
        if not site.initialized:
            site.init([*default_hostnames(), host], broker_port)
            click.echo(f"created site {site.root}: broker files in {site.broker_dir}", err=True)
        if device is not None and out is not None:
            site.require_certified(host)
            enrolled = site.enroll(device, out, host, broker_port, device_dir)
            click.echo(
                f"enrolled {device} (broker {host}:{broker_port}): copy {enrolled.bundle}/ to {device_dir}/ "
                "on the device"
            )
            reloaded = enrolled.broker_reloaded
        elif collector_name is not None:
            identity = site.add_collector(collector_name)
            click.echo(
                f"added collector identity {identity.user}: run it with `ctxscope collector run --site "
                f"{site.root} --collector {collector_name} --share-group GROUP --store postgresql://...`"
            )
            reloaded = identity.broker_reloaded
    except (SiteError, InvalidIdentifier) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(_reload_note(reloaded, site), err=True)


@click.command("revoke")
@click.argument("device", required=False)
@collector_option
@site_option
def revoke(device: str | None, collector_name: str | None, site_dir: Path | None) -> None:
    """Remove DEVICE's broker credentials: it can no longer connect, publish or receive commands. With
    --collector NAME, remove that added collector identity instead."""
    _one_of(device, collector_name)
    site = Site(site_dir or default_site())
    try:
        if device is not None:
            reloaded = site.revoke(device)
            click.echo(f"revoked {device}")
        elif collector_name is not None:
            identity = site.remove_collector(collector_name)
            click.echo(f"revoked collector identity {identity.user}")
            reloaded = identity.broker_reloaded
    except (SiteError, InvalidIdentifier) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(_reload_note(reloaded, site), err=True)


@click.command("renew-cert")
@click.option(
    "--broker-host",
    "broker_hosts",
    multiple=True,
    help="a further name or address for the certificate (repeatable); the current one's are kept",
)
@site_option
def renew_cert(broker_hosts: tuple[str, ...], site_dir: Path | None) -> None:
    """Issue the broker a new TLS certificate from the site's CA (devices keep their bundles) and tell
    the broker to reload it. The certificate is valid for 825 days; the collector warns 30 days
    before it expires (its log, /api/ingest, the fleet page, /metrics)."""
    site = Site(site_dir or default_site())
    try:
        renewed = site.renew_broker_cert(list(broker_hosts))
    except SiteError as exc:
        raise click.ClickException(str(exc)) from exc
    days = (renewed.not_after - datetime.datetime.now(datetime.timezone.utc)).days
    click.echo(
        f"renewed the broker certificate for {', '.join(renewed.host_names)}: valid until "
        f"{renewed.not_after:%Y-%m-%d} ({days} days; the site's CA until {renewed.ca_not_after:%Y-%m-%d})"
    )
    click.echo(_reload_note(renewed.broker_reloaded, site), err=True)
