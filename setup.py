"""Maps the top-level folders into one import namespace: agent/ -> ctxscope.agent, and so on.

Keeps generic names such as `shared` out of site-packages while the repository keeps the layout of
the design card. Everything else about the build lives in pyproject.toml.
"""

from setuptools import find_packages, setup

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

setup(packages=packages, package_dir=package_dir)
