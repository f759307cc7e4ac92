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
    assert manifest.build_revision(stamp) is None
    stamp.write_text(json.dumps({"git_revision": "0123abc", "source": "git"}))
    assert manifest.build_revision(stamp) == "0123abc"
    stamp.write_text("not json")
    assert manifest.build_revision(stamp) is None


@pytest.mark.slow
def test_a_built_wheel_carries_the_revision(tmp_path: Path) -> None:
    env = {**os.environ, "CTXSCOPE_GIT_REVISION": "feedface"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ctxscope-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = json.loads(archive.read("ctxscope/_build_info.json"))
    assert info == {"git_revision": "feedface", "source": "CTXSCOPE_GIT_REVISION"}


def test_cudnn_is_absent_without_cudnn_never_zero() -> None:
    import torch

    libraries = manifest.attention_libraries()
    if torch.backends.cudnn.is_available() and torch.backends.cudnn.version():
        assert int(libraries["cudnn"]) > 0
    else:
        assert "cudnn" not in libraries
    assert "cudnn" not in manifest.collect("cpu")["packages"] or libraries
