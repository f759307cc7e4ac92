"""jetson/install.sh end to end against a fake Jetson root: a fake L4T release file and machine id, a
stand-in for NVIDIA's torch (a `torch` package that reports CUDA) on the board's system path, and a
`systemctl` that records what it was asked. The real lock is installed from the package index."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ctxscope.agent.config import load_config
from ctxscope.collector.security.site import agent_toml

REPO = Path(__file__).resolve().parents[2]
MACHINE_ID = "4f1c2a9be07d4c3f8a61b2c3d4e5f607"
FAKE_TORCH = """
import types
__version__ = "{version}"
version = types.SimpleNamespace(cuda="12.6")
cuda = types.SimpleNamespace(is_available=lambda: {cuda})
"""
FAKE_SYSTEMCTL = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "systemd 249 (249.11-0ubuntu3)"; exit 0; fi
echo "$*" >> "$SYSTEMCTL_LOG"
"""


def _board(
    tmp: Path, *, release: str = "R36 (release), REVISION: 4.0", torch: str = "2.8.0", cuda: bool = True
):
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(
        f"# {release}, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    )
    (root / "etc" / "machine-id").write_text(MACHINE_ID + "\n")
    system_path = tmp / "board-site"
    (system_path / "torch").mkdir(parents=True)
    (system_path / "torch" / "__init__.py").write_text(FAKE_TORCH.format(version=torch, cuda=cuda))
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    env = {
        **os.environ,
        "ROOT": str(root),
        "PYTHON": shutil.which("python3") or "python3",
        "PYTHONPATH": str(
            system_path
        ),  # the board's system site-packages, seen through --system-site-packages
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SYSTEMCTL_LOG": str(tmp / "systemctl.log"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    return root, env


def _install(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "jetson" / "install.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_install_twice_then_uninstall(tmp_path: Path) -> None:
    root, env = _board(tmp_path)
    first = _install(env)
    assert first.returncode == 0, first.stderr
    second = _install(env)
    assert second.returncode == 0, second.stderr
    assert "kept the existing" in second.stdout

    # a unique device id from the machine id, in a config only its owner reads
    config = root / "etc" / "ctxscope" / "agent.toml"
    assert f'device = "jetson-{MACHINE_ID[:12]}"' in config.read_text()
    assert f'username = "jetson-{MACHINE_ID[:12]}"' in config.read_text()
    assert config.stat().st_mode & 0o777 == 0o600

    # the unit runs the installed command; without a bundle the service is neither enabled nor started
    unit = (root / "etc" / "systemd" / "system" / "ctxscope-agent.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    command = exec_start.removeprefix("ExecStart=").split()
    assert command[0] == str(root / "opt" / "ctxscope" / "venv" / "bin" / "ctxscope")
    # (`agent serve` itself imports torch, which the stand-in does not fully provide: test_deploy_files
    # checks its options against the real command)
    shown = subprocess.run([command[0], "agent", "--help"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "serve" in shown.stdout
    assert command[1:3] == ["agent", "serve"]
    assert str(root / "etc" / "ctxscope" / "agent.toml") in exec_start
    assert not (root / "etc" / "systemd" / "system" / "ctxscope-agent.service.d").exists()  # systemd 249
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert not any(c.startswith(("enable", "restart")) for c in calls), calls
    assert "systemctl enable --now ctxscope-agent" in second.stdout

    # torch is the board's, untouched: no torch in the environment, the stand-in still imported
    python = root / "opt" / "ctxscope" / "venv" / "bin" / "python"
    seen = subprocess.run(
        [python, "-c", "import torch; print(torch.__file__)"], capture_output=True, text=True, env=env
    )
    assert seen.stdout.strip() == str(tmp_path / "board-site" / "torch" / "__init__.py")
    assert not list((root / "opt" / "ctxscope" / "venv" / "lib").glob("python3*/site-packages/torch"))
    assert "environment ready: torch 2.8.0 12.6" in first.stdout

    removed = _install(env, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt" / "ctxscope").exists() and config.exists()


@pytest.mark.slow
def test_an_enrollment_bundle_configures_and_starts(tmp_path: Path) -> None:
    root, env = _board(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    # what `ctxscope collector enroll` writes
    (bundle / "agent.toml").write_text(
        agent_toml("orin-lab-7", "p" * 24, "collector.lan", 8883, "/etc/ctxscope")
    )
    (bundle / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    done = _install(env, "--bundle", str(bundle))
    assert done.returncode == 0, done.stderr
    config = root / "etc" / "ctxscope" / "agent.toml"
    assert 'device = "orin-lab-7"' in config.read_text() and config.stat().st_mode & 0o777 == 0o600
    assert (root / "etc" / "ctxscope" / "ca.crt").exists()
    # the spool (and the state `agent status --config` reads beside it) in the service's state folder
    assert load_config(config).resolved_spool_path() == Path("/var/lib/ctxscope/spool.sqlite")
    assert "restart ctxscope-agent.service" in (tmp_path / "systemctl.log").read_text()


@pytest.mark.parametrize(
    ("board", "reason"),
    [
        (
            {"release": "R35 (release), REVISION: 4.1"},
            "JetPack 5 and older are not supported",
        ),
        ({"torch": "2.5.0a0+872d972e41.nv24.08"}, "older than 2.6"),
        ({"cuda": False}, "does not see CUDA"),
    ],
)
def test_refusals_say_why(tmp_path: Path, board: dict, reason: str) -> None:
    _, env = _board(tmp_path, **board)
    refused = _install(env)
    assert refused.returncode == 1
    assert reason in refused.stderr


def test_a_bad_device_id_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    root, env = _board(tmp_path)
    refused = _install(env, "--device-id", "Bad_ID")
    assert refused.returncode == 1 and "must be 1-32 characters" in refused.stderr
    assert not (root / "etc" / "ctxscope").exists() and not (root / "opt").exists()


def test_install_script_help_lists_its_options() -> None:
    shown = subprocess.run(
        ["bash", str(REPO / "jetson" / "install.sh"), "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0
    for option in ("--bundle", "--device-id", "--uninstall"):
        assert option in shown.stdout
    assert shown.stdout.startswith("Installs")
