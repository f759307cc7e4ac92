#!/usr/bin/env bash
# Does every package of the lock have a wheel for each supported platform? A dry-run install per
# (Python, architecture) pair against the package index: no download, nothing installed. Needs the
# index (network). jetson-stats 4.x is published as a source archive only (pure Python): it alone may
# come as one. Usage: bash scripts/check-lock-platforms.sh [LOCK]   (default: requirements/agent.txt)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
lock=${1:-$repo/requirements/agent.txt}
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
failed=0
for python in 3.10 3.11 3.12; do
  for arch in x86_64 aarch64; do
    printf 'Python %s on %s: ' "$python" "$arch"
    if python3 -m pip install --quiet --dry-run --ignore-installed --no-deps --require-hashes \
      --only-binary=:all: --no-binary=jetson-stats --implementation cp --python-version "$python" \
      --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
      --platform "linux_$arch" --target "$target" -r "$lock"; then
      echo ok
    else
      echo "FAILED"
      failed=1
    fi
  done
done
exit "$failed"
