"""scripts/check-deploy.sh: shellcheck, hadolint, systemd-analyze verify and the unit's exposure score."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/check-deploy.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("shellcheck") is None or shutil.which("systemd-analyze") is None,
    reason="shellcheck and systemd-analyze are installed by scripts/system-deps.sh",
)


def _check(**env: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_deployment_files_pass_every_check() -> None:
    result = _check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hadolint: 3 Dockerfiles" in result.stdout
    exposure = float(result.stdout.split("exposure ")[1].split()[0])
    assert exposure <= 4.0


def test_an_unhardened_unit_fails(tmp_path: Path) -> None:
    unit = tmp_path / "ctxscope-agent.service"
    unit.write_text(
        "[Unit]\nDescription=unhardened\n\n[Service]\nExecStart=/usr/bin/true\nSupplementaryGroups=jtop\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    result = _check(UNIT=str(unit))
    assert result.returncode == 1
    assert "at most 4.0" in result.stdout
    assert float(result.stdout.split("exposure ")[1].split()[0]) > 4.0
