"""Broker access options shared by the collector's commands: identity, TLS, and the safety check.

`--site DIR` takes the identity (collector or operator) and CA from a site made by `enroll`;
`--username/--password/--ca-file` name them one by one (for a collector on another host). A broker
outside loopback without credentials and TLS is refused unless `--insecure` is given.

A share group's name on the broker always carries a secret (the site's, or $CTXSCOPE_SHARE_GROUP_SECRET
without --site): mosquitto lets any authenticated client join a group it can name, and hands it, and
so loses, its turn of the group's records.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ctxscope.collector.ingest import SHARE_GROUP
from ctxscope.collector.security.broker_check import check_broker
from ctxscope.collector.security.site import Site, SiteError
from ctxscope.shared.broker_access import BrokerAccess, InsecureBroker, require_secure

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
SHARE_GROUP_NAME_MAX = 64  # the site's secret adds 33 characters, within the 100 a group may have
SHARE_SECRET_ENV = "CTXSCOPE_SHARE_GROUP_SECRET"
SHARE_SECRET_MIN = 32  # as long as a site's (128 bits in hex)


def access_options(func: F) -> F:
    """Add --site, --username, --password, --ca-file, --tls and --insecure to a click command."""
    options = [
        click.option(
            "--site",
            "site_dir",
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            default=None,
            help="use the identity and CA of this site (made by `ctxscope collector enroll`)",
        ),
        click.option("--username", envvar="CTXSCOPE_USERNAME", default=None, help="MQTT user name."),
        click.option("--password", envvar="CTXSCOPE_PASSWORD", default=None, help="MQTT password."),
        click.option(
            "--ca-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help="CA certificate of the broker (implies --tls)",
        ),
        click.option("--tls", is_flag=True, help="TLS with the system's CAs"),
        click.option(
            "--insecure",
            is_flag=True,
            help="allow a broker outside loopback without credentials and TLS (trusted networks only)",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def resolve_access(host: str, user: str, who: str, params: dict[str, Any]) -> BrokerAccess:
    """The BrokerAccess that the options say; raise ClickException when it is unusable or unsafe."""
    site_dir: Path | None = params["site_dir"]
    try:
        if site_dir is not None:
            access = Site(site_dir).access(user)
        else:
            ca_file: Path | None = params["ca_file"]
            access = BrokerAccess(
                username=params["username"],
                password=params["password"],
                tls=params["tls"] or ca_file is not None,
                ca_file=ca_file,
            )
        access = BrokerAccess(
            access.username, access.password, access.tls, access.ca_file, params["insecure"]
        )
        require_secure(host, access, who)
    except (SiteError, InsecureBroker) as exc:
        raise click.ClickException(str(exc)) from exc
    return access


def resolve_share_group(name: str | None, site_dir: Path | None) -> str | None:
    """The share group as subscribed: the name joined to the site's secret, or without a site to
    $CTXSCOPE_SHARE_GROUP_SECRET (the name is checked first, so that a refusal never prints the secret)."""
    if name is None:
        return None
    if len(name) > SHARE_GROUP_NAME_MAX or not SHARE_GROUP.fullmatch(name):
        raise click.ClickException(
            f"share group {name!r}: use 1-{SHARE_GROUP_NAME_MAX} of A-Z, a-z, 0-9, '_' and '-'"
        )
    if site_dir is None:
        return f"{name}-{_env_share_secret(name)}"
    try:
        return Site(site_dir).share_group(name)
    except SiteError as exc:
        raise click.ClickException(str(exc)) from exc


def _env_share_secret(name: str) -> str:
    """The group secret from the environment; refuse a missing or short one, since a group named as
    given can be joined by any device, which then makes its turn of the records vanish."""
    secret = os.environ.get(SHARE_SECRET_ENV, "").strip()
    longest = 100 - len(name) - 1  # a group name on the broker has at most 100 characters (ingest)
    if len(secret) < SHARE_SECRET_MIN or len(secret) > longest or not SHARE_GROUP.fullmatch(secret):
        raise click.ClickException(
            f"--share-group without --site needs ${SHARE_SECRET_ENV}: {SHARE_SECRET_MIN}-{longest} random "
            "characters of A-Z, a-z, 0-9, '_' and '-' (e.g. `openssl rand -hex 16`, or a site's "
            "identities/share-group.secret), the same for every collector of the group"
        )
    return secret


def enforce_safe_broker(
    host: str, port: int, access: BrokerAccess, config: Path | None, site_dir: Path | None, require: bool
) -> None:
    """Warn loudly about an unsafe or unverifiable broker; with `require`, refuse to start. The site's
    configuration stands for the broker only if it can be the one at `host:port`: --broker may name
    another (a file named with --broker-config is taken at its word, e.g. behind a port mapping)."""
    from_site = False
    if config is None and site_dir is not None:
        config, from_site = Site(site_dir).broker_dir / "mosquitto.conf", True
    problems = check_broker(host, port, access, config, must_serve=from_site)
    for problem in problems:
        log.warning("UNSAFE BROKER: %s", problem)
    if problems and require:
        raise click.ClickException(
            "refusing to ingest from an unsafe broker (--require-safe-broker):\n  " + "\n  ".join(problems)
        )
