"""jetson/install.sh end to end against a fake Jetson root: run twice, check unit, config and torch."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ctxscope.compat import tomllib

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")

pytestmark = pytest.mark.skipif(
    not SYSTEM_PYTHON.exists() or shutil.which("sha256sum") is None,
    reason="needs a system python3 with venv and coreutils",
)

FAKE_TORCH = '''"""A stand-in for the board's CUDA torch."""
__version__ = "2.6.0"


class version:
    cuda = "12.6"


class cuda:
    @staticmethod
    def is_available():
        return True
'''

FAKE_COMMANDS = {
    # systemd 249 as on Ubuntu 22.04 (JetPack 6); no jtop unit installed.
    "systemctl": (
        'echo "systemctl $*" >>"$ROOT/commands.log"\n'
        'case "$1" in --version) echo "systemd 249 (249.11-0ubuntu3)";; is-active) exit 3;; esac\n'
    ),
    "useradd": (
        'echo "useradd $*" >>"$ROOT/commands.log"\n'
        'echo "ctxscope:x:999:999::/var/lib/ctxscope:" >>"$ROOT/etc/passwd"\n'
    ),
    "chown": 'echo "chown $*" >>"$ROOT/commands.log"\n',
    "apt-get": 'echo "apt-get $*" >>"$ROOT/commands.log"\n',
    "nvidia-smi": "echo 'NVIDIA-SMI 540.3.0'\n",
    "tegrastats": "echo 'RAM 1000/7620MB GR3D_FREQ 0%'\n",
}


def _fake_wheel(directory: Path) -> tuple[str, str]:
    """A minimal pure-Python wheel; returns (requirement, sha256)."""
    name = "ctxscope_fakedep-1.0-py3-none-any.whl"
    info = "ctxscope_fakedep-1.0.dist-info"
    files = {
        "ctxscope_fakedep/__init__.py": "VALUE = 1\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: ctxscope-fakedep\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(directory / name, "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    return "ctxscope-fakedep==1.0", hashlib.sha256((directory / name).read_bytes()).hexdigest()


@pytest.fixture
def fake_board(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\nrender:x:109:\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_COMMANDS.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    system_site = tmp_path / "system-site"
    (system_site / "torch").mkdir(parents=True)
    (system_site / "torch/__init__.py").write_text(FAKE_TORCH)
    (system_site / "torch-2.6.0.dist-info").mkdir()
    (system_site / "torch-2.6.0.dist-info/METADATA").write_text(
        "Metadata-Version: 2.1\nName: torch\nVersion: 2.6.0\n"
    )
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    requirement, digest = _fake_wheel(wheels)
    lock = tmp_path / "lock.txt"
    lock.write_text(f"{requirement} --hash=sha256:{digest}\n")
    # A copy of the checkout, so building the project leaves the working tree alone.
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for part in ("agent", "collector", "shared", "ctxscope", "jetson"):
        shutil.copytree(REPO / part, checkout / part, ignore=ignore)
    for part in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / part, checkout / part)
    return {
        "root": root,
        "bin": bin_dir,
        "site": system_site,
        "wheels": wheels,
        "lock": lock,
        "checkout": checkout,
    }


def _run_install(board: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{board['bin']}:/usr/bin:/bin",
        "HOME": str(board["root"]),
        "ROOT": str(board["root"]),
        "PYTHON": str(SYSTEM_PYTHON),
        "LOCK": str(board["lock"]),
        # The board's torch sits on the system python's path; the venv sees it through that path.
        "PYTHONPATH": str(board["site"]),
        "PIP_CONFIG_FILE": os.environ.get("PIP_CONFIG_FILE", "/etc/pip.conf"),
    }
    command = ["bash", str(board["checkout"] / "jetson/install.sh"), "--wheels", str(board["wheels"]), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_install_twice_on_a_fake_jetson(fake_board: dict[str, Path]) -> None:
    root = fake_board["root"]
    torch_init = fake_board["site"] / "torch/__init__.py"
    torch_before = torch_init.read_bytes()
    first = _run_install(fake_board, "--broker", "collector.example:8883")
    assert first.returncode == 0, first.stdout + first.stderr
    config_text = (root / "etc/ctxscope/agent.toml").read_text()
    second = _run_install(fake_board, "--broker", "collector.example:8883")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "kept" in second.stdout

    config = tomllib.loads((root / "etc/ctxscope/agent.toml").read_text())
    assert (root / "etc/ctxscope/agent.toml").read_text() == config_text
    expected = hashlib.sha256(b"0123456789abcdef0123456789abcdef").hexdigest()[:12]
    assert config["device"] == f"jetson-{expected}"
    assert (config["broker_host"], config["broker_port"]) == ("collector.example", 8883)

    unit = (root / "etc/systemd/system/ctxscope-agent.service").read_text()
    assert unit == (REPO / "jetson/ctxscope-agent.service").read_text()
    dropin = (root / "etc/systemd/system/ctxscope-agent.service.d/host.conf").read_text()
    assert "SupplementaryGroups=video render" in dropin
    assert "jtop" not in dropin.replace("# Written", "")
    # systemd 249 knows no RestartSteps: no backoff drop-in.
    assert not (root / "etc/systemd/system/ctxscope-agent.service.d/backoff.conf").exists()

    log = (root / "commands.log").read_text()
    assert log.count("useradd") == 1
    assert log.count("systemctl enable ctxscope-agent.service") == 2
    assert "apt-get" not in log

    venv_python = root / "opt/ctxscope/venv/bin/python"
    probe = subprocess.run(
        [
            str(venv_python),
            "-c",
            "import torch, ctxscope_fakedep, agent; print(torch.__file__, torch.__version__)",
        ],
        env={"PYTHONPATH": str(fake_board["site"]), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == [str(torch_init), "2.6.0"]
    assert torch_init.read_bytes() == torch_before
    assert not list((root / "opt/ctxscope/venv/lib").glob("python3*/site-packages/torch"))


def test_refuses_a_torch_older_than_2_6(fake_board: dict[str, Path]) -> None:
    torch_init = fake_board["site"] / "torch/__init__.py"
    torch_init.write_text(FAKE_TORCH.replace('"2.6.0"', '"2.4.0a0+3bcc3cddb5.nv24.07"'))
    result = _run_install(fake_board)
    assert result.returncode != 0
    assert "torch 2.4.0a0+3bcc3cddb5.nv24.07 is too old" in result.stderr
    assert not (fake_board["root"] / "opt/ctxscope/venv").exists()


def test_stops_when_cuda_is_unusable(fake_board: dict[str, Path]) -> None:
    torch_init = fake_board["site"] / "torch/__init__.py"
    torch_init.write_text(FAKE_TORCH.replace("return True", "return False"))
    result = _run_install(fake_board)
    assert result.returncode != 0
    assert "cannot use the GPU" in result.stderr


def test_bundle_and_uninstall(fake_board: dict[str, Path], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "agent.toml").write_text('device = "orin-lab-7"\nbroker_host = "collector.lab"\n')
    (bundle / "ca.crt").write_text("CA\n")
    (bundle / "password").write_text("secret\n")
    result = _run_install(fake_board, "--bundle", str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    etc = fake_board["root"] / "etc/ctxscope"
    for name in ("ca.crt", "password"):
        assert (etc / name).read_text() == (bundle / name).read_text()
    config = tomllib.loads((etc / "agent.toml").read_text())
    assert config["device"] == "orin-lab-7"
    assert config["spool_path"] == "/var/lib/ctxscope/spool.sqlite"
    for name in ("agent.toml", "ca.crt", "password"):
        assert (etc / name).stat().st_mode & 0o777 == 0o600
    assert "systemctl restart ctxscope-agent.service" in (fake_board["root"] / "commands.log").read_text()

    removed = _run_install(fake_board, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (fake_board["root"] / "opt/ctxscope").exists()
    assert not (fake_board["root"] / "etc/systemd/system/ctxscope-agent.service").exists()
    assert (etc / "agent.toml").exists()
    purged = _run_install(fake_board, "--uninstall", "--purge")
    assert purged.returncode == 0
    assert not etc.exists()


def test_python_is_3_10_compatible_per_tool_config() -> None:
    """ruff and mypy check the code as Python 3.10, the JetPack 6 interpreter."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["ruff"]["target-version"] == "py310"
    assert project["tool"]["mypy"]["python_version"] == "3.10"
    assert sys.version_info >= (3, 10)
