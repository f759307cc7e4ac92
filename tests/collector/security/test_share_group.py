"""A share group's name on the broker always holds a secret: the site's with --site, else the one in
$CTXSCOPE_SHARE_GROUP_SECRET; without either, --share-group is refused (mosquitto 2.0.11 lets any device
join a group it can name, and the records handed to it are lost: 50 of 100 in the audit)."""

from __future__ import annotations

import secrets
from pathlib import Path

import click
import pytest

from ctxscope.collector.security.options import SHARE_SECRET_ENV, resolve_share_group
from ctxscope.collector.security.site import Site


def test_a_share_group_without_a_site_or_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARE_SECRET_ENV, raising=False)
    with pytest.raises(
        click.ClickException, match=f"--share-group without --site needs \\${SHARE_SECRET_ENV}"
    ):
        resolve_share_group("fleet", None)
    assert resolve_share_group(None, None) is None


@pytest.mark.parametrize("secret", ["short-secret", "x" * 31, "has space" + "x" * 32, "x" * 95, "é" * 32])
def test_a_weak_or_malformed_secret_is_refused_without_being_printed(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHARE_SECRET_ENV, secret)
    with pytest.raises(click.ClickException) as refused:
        resolve_share_group("fleet", None)
    assert SHARE_SECRET_ENV in refused.value.message and secret not in refused.value.message


def test_the_secret_joins_the_group_name_as_a_site_would(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A collector without a site, given the site's secret, is in the same group as one run with --site."""
    secret = secrets.token_hex(16)
    monkeypatch.setenv(SHARE_SECRET_ENV, secret)
    assert resolve_share_group("fleet", None) == f"fleet-{secret}"
    site = Site(tmp_path / "site")
    site.init(["127.0.0.1"])
    monkeypatch.setenv(SHARE_SECRET_ENV, (site.root / "identities" / "share-group.secret").read_text())
    assert (
        resolve_share_group("fleet", None)
        == resolve_share_group("fleet", site.root)
        == site.share_group("fleet")
    )
    with pytest.raises(click.ClickException, match="share group 'fl/eet'"):  # the name is checked either way
        resolve_share_group("fl/eet", None)
