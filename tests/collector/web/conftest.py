"""Fixtures of the dashboard's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxscope.collector.web.auth import passwd

PASSWORD = "correct horse battery"


@pytest.fixture
def credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A credentials file of one user, alice, with PASSWORD (written by `collector passwd`)."""
    path = tmp_path / "users"
    monkeypatch.setenv("CTXSCOPE_TEST_PASSWORD", PASSWORD)
    result = CliRunner().invoke(passwd, [str(path), "alice", "--password-env", "CTXSCOPE_TEST_PASSWORD"])
    assert result.exit_code == 0, result.output
    return path
