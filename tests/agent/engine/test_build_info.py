"""The git revision is stamped into the package at build time and read back where no .git exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ctxscope.agent.engine import manifest

ROOT = Path(__file__).resolve().parents[3]


def test_stamp_is_read_back(tmp_path: Path) -> None:
    stamp = tmp_path / manifest.BUILD_INFO
    assert manifest.build_revision(stamp) == {}
    stamp.write_text(json.dumps({"git_revision": "0123abc", "git_dirty": True, "source": "git"}))
    assert manifest.build_revision(stamp) == {"git_revision": "0123abc", "git_dirty": True}
    stamp.write_text(json.dumps({"git_revision": "0123abc", "source": "CTXSCOPE_GIT_REVISION"}))
    assert manifest.build_revision(stamp) == {"git_revision": "0123abc"}
    stamp.write_text("not json")
    assert manifest.build_revision(stamp) == {}


def test_a_checkout_reports_its_revision_and_whether_it_was_dirty() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    revision = manifest.source_revision()
    assert revision["git_revision"] == head.stdout.strip()
    assert isinstance(revision["git_dirty"], bool)


@pytest.mark.slow
def test_a_built_wheel_carries_the_revision(tmp_path: Path) -> None:
    env = {**os.environ, "CTXSCOPE_GIT_REVISION": "feedface"}
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "-w", str(tmp_path), str(ROOT)], check=True, env=env, capture_output=True)
    (wheel,) = tmp_path.glob("ctxscope-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = json.loads(archive.read("ctxscope/_build_info.json"))
    assert info == {"git_revision": "feedface", "source": "CTXSCOPE_GIT_REVISION"}


@pytest.mark.slow
def test_an_installed_package_reads_its_own_stamp(tmp_path: Path) -> None:
    """Installed (as on a board or the GPU machine), the manifest's revision comes from the stamp inside
    the installed package, even where the installation lies inside another git checkout."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "other"], check=True)
    site = tmp_path / "site"
    env = {**os.environ, "CTXSCOPE_GIT_REVISION": "feedface"}
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(site), str(ROOT)], check=True, env=env, capture_output=True)
    read = (
        "from ctxscope.agent.engine import manifest; "
        "print(manifest.__file__); print(manifest.collect('cpu').get('git_revision'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", read],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    where, revision = done.stdout.split()
    assert Path(where).is_relative_to(site)
    assert revision == "feedface"


def test_cudnn_is_absent_without_cudnn_never_zero() -> None:
    import torch

    libraries = manifest.attention_libraries()
    if torch.backends.cudnn.is_available() and torch.backends.cudnn.version():
        assert int(libraries["cudnn"]) > 0
    else:
        assert "cudnn" not in libraries
    assert "cudnn" not in manifest.collect("cpu")["packages"] or libraries


def test_an_unreadable_status_leaves_dirtiness_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout whose `git status` fails is not reported clean: `git_dirty` is absent."""
    monkeypatch.setattr(manifest, "_git", lambda _cwd, *args: "0123abc" if args[0] == "rev-parse" else None)
    assert manifest.source_revision() == {"git_revision": "0123abc"}


def test_a_cpu_manifest_names_the_cpu_and_its_threads() -> None:
    """On the CPU the device is the CPU: which one, and how many threads torch ran on, change every
    timing; "cpu" alone does not say which device ran."""
    import torch

    cpu = manifest.collect("cpu")["cpu"]
    assert cpu["threads"] == torch.get_num_threads()
    assert cpu["logical_cores"] == os.cpu_count()
    if Path("/proc/cpuinfo").is_file():
        assert cpu["model"]
