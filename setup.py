"""Maps the top-level folders into one import namespace: agent/ -> ctxscope.agent, and so on.

Keeps generic names such as `shared` out of site-packages while the repository keeps the layout of
the design card. Stamps the git revision the package was built from into `ctxscope/_build_info.json`
(read at run time where no .git exists). Everything else about the build lives in pyproject.toml.
"""

import json
import os
import subprocess
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

BUILD_INFO = "_build_info.json"
REVISION_ENV = "CTXSCOPE_GIT_REVISION"  # stamps a build from a tree without .git


def _revision() -> dict[str, object]:
    revision = os.environ.get(REVISION_ENV)
    if revision:
        return {"git_revision": revision, "source": REVISION_ENV}
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, check=False
        )
    except OSError:
        return {}
    if head.returncode != 0 or not head.stdout.strip():
        return {}
    return {"git_revision": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip()), "source": "git"}


class BuildWithRevision(build_py):
    """build_py that also writes the revision stamp (nothing when it cannot be read)."""

    def run(self) -> None:
        super().run()
        info = _revision()
        if info:
            target = Path(self.build_lib) / "ctxscope" / BUILD_INFO
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(info))


NAMESPACED_FOLDERS = {
    "ctxscope": "ctxscope",
    "agent": "ctxscope.agent",
    "collector": "ctxscope.collector",
    "shared": "ctxscope.shared",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder, package in NAMESPACED_FOLDERS.items():
    packages.append(package)
    package_dir[package] = folder
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=package_dir, cmdclass={"build_py": BuildWithRevision})
