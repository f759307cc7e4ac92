"""`ctxscope collector enroll DEVICE --out DIR` and `ctxscope collector revoke DEVICE`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ctxscope.collector.security.broker_config import TLS_PORT
from ctxscope.collector.security.site import Site, SiteError, default_hostnames
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
    return (
        f"reload the broker to apply it: `kill -HUP $(cat {site.broker_dir}/mosquitto.pid)`, or "
        "`docker compose -f docker/compose.yaml kill -s HUP broker`"
    )


@click.command("enroll")
@click.argument("device")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="bundle folder")
@click.option(
    "--broker-host",
    default=None,
    help="the broker's address as the device reaches it (default: this host's name); a new site's "
    "certificate is issued for it",
)
@click.option("--broker-port", type=click.IntRange(1, 65535), default=TLS_PORT, show_default=True)
@click.option(
    "--device-dir", default="/etc/ctxscope", show_default=True, help="where the bundle goes on the device"
)
@site_option
def enroll(
    device: str, out: Path, broker_host: str | None, broker_port: int, device_dir: str, site_dir: Path | None
) -> None:
    """Give DEVICE its own broker credentials and write its bundle (agent.toml + ca.crt) to --out.

    Creates the site (CA, broker certificate, ACL, collector and operator identities, mosquitto.conf)
    on first use."""
    site = Site(site_dir or default_site())
    host = broker_host or default_hostnames()[0]
    try:
        if not site.initialized:
            site.init([*default_hostnames(), host], broker_port)
            click.echo(f"created site {site.root}: broker files in {site.broker_dir}", err=True)
        enrolled = site.enroll(device, out, host, broker_port, device_dir)
    except (SiteError, InvalidIdentifier) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"enrolled {device}: copy {enrolled.bundle}/ to {device_dir}/ on the device")
    click.echo(f"{_reload_note(enrolled.broker_reloaded, site)}", err=True)


@click.command("revoke")
@click.argument("device")
@site_option
def revoke(device: str, site_dir: Path | None) -> None:
    """Remove DEVICE's broker credentials: it can no longer connect, publish or receive commands."""
    site = Site(site_dir or default_site())
    try:
        reloaded = site.revoke(device)
    except (SiteError, InvalidIdentifier) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {device}")
    click.echo(_reload_note(reloaded, site), err=True)
