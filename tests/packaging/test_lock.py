"""The committed locks agree with pyproject.toml: every dependency pinned, inside its range, with hashes;
torch left to the platform."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from ctxscope.compat import tomllib

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
ROLES = {
    "dev.txt": ["agent", "collector", "postgres", "dev", "jetson"],
    "agent.txt": ["agent", "jetson"],
    "collector.txt": ["collector", "postgres"],
}
NOT_LOCKED = {"torch"}


def _pins(lock: str) -> dict[str, Version]:
    text = (REPO / "requirements" / lock).read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^ ;\\\n]+)", text, flags=re.M)
    return {name.lower().replace("_", "-"): Version(version) for name, version in pins}


@pytest.mark.parametrize("lock", sorted(ROLES))
def test_every_dependency_is_pinned_inside_its_range(lock: str) -> None:
    pins = _pins(lock)
    wanted = PROJECT["dependencies"] + [
        r for extra in ROLES[lock] for r in PROJECT["optional-dependencies"][extra]
    ]
    for requirement in map(Requirement, wanted):
        name = requirement.name.lower()
        if name in NOT_LOCKED or (
            requirement.marker and not requirement.marker.evaluate({"python_version": "3.10"})
        ):
            continue
        assert name in pins, f"{name} is not in requirements/{lock}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name], lock)
    assert "setuptools" in pins, "the build backend must be locked for --no-build-isolation installs"


@pytest.mark.parametrize("lock", sorted(ROLES))
def test_every_pin_has_hashes_and_torch_is_the_platforms(lock: str) -> None:
    text = (REPO / "requirements" / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.strip())
    assert all("--hash=sha256:" in entry for entry in entries)
    assert not {"torch", "triton"} & set(_pins(lock))
    assert not [name for name in _pins(lock) if name.startswith(("nvidia-cu", "nvidia-nccl", "cuda-"))]


def test_role_locks_take_the_versions_of_the_full_lock() -> None:
    full = _pins("dev.txt")
    for lock in ("agent.txt", "collector.txt"):
        for name, version in _pins(lock).items():
            assert full.get(name) == version, (lock, name, version, full.get(name))


def test_every_range_has_an_upper_bound() -> None:
    extras = PROJECT["optional-dependencies"]
    for raw in PROJECT["dependencies"] + [r for rs in extras.values() for r in rs]:
        requirement = Requirement(raw)
        assert any(spec.operator in ("<", "<=", "==") for spec in requirement.specifier), raw
