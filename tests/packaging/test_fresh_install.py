"""A plain, non-editable `pip install .` into a fresh virtual environment, its dependencies held to the
committed lock, gives a working `ctxscope`."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _copy_source_tree(target: Path) -> None:
    """Copy the tracked and untracked-not-ignored files, so the test builds the tree under test
    without writing build artefacts into the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = REPO / raw.decode()
        if source.is_file():
            destination = target / raw.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read_bytes())


@pytest.mark.slow
def test_plain_install_in_a_fresh_venv(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _copy_source_tree(tmp_path / "src")
    # as a device installs it: the agent's lock (hash-checked; torch is the platform's own, absent here),
    # then the package without resolving anything more
    lock = tmp_path / "src" / "requirements" / "agent.txt"
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", str(lock)], check=True, timeout=900)
    subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", str(tmp_path / "src")], check=True, timeout=900
    )

    cli = env_dir / "bin" / "ctxscope"
    for args in ([], ["agent"], ["collector"]):
        shown = subprocess.run(
            [str(cli), *args, "--help"], capture_output=True, text=True, check=True, cwd=tmp_path
        ).stdout
        assert "Usage: ctxscope" in shown

    site_packages = next((env_dir / "lib").glob("python3*/site-packages"))
    installed = {p.name for p in site_packages.iterdir()}
    assert "ctxscope" in installed
    for generic in ("shared", "agent", "collector"):
        assert generic not in installed, f"{generic!r} leaked into site-packages"

    # The agent's light path must not drag in the collector's web stack.
    probe = (
        "import sys, ctxscope.agent.cli, ctxscope.shared.codec;"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'plotly', 'torch') if m in sys.modules))"
    )
    # Run outside the checkout: `python -c` puts the working directory first on sys.path.
    loaded = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert loaded.strip() == "[]"
