#!/usr/bin/env bash
# Installs a lock of requirements/ into a Python environment with nothing from outside it:
#   bash scripts/install-lock.sh PYTHON LOCK [PIP_OPTION ...]
# --require-hashes checks every file, --no-deps leaves what the lock does not name (torch) as it is.
# A package published as a source archive only (jetson-stats) is built without build isolation, with
# the lock's own setuptools, installed first: with isolation pip would fetch the build tools it needs
# from the index, unpinned and unhashed, and run them.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: install-lock.sh PYTHON LOCK [PIP_OPTION ...]" >&2; exit 2; }
python=$1 lock=$2
shift 2
build=$(mktemp)
trap 'rm -f "$build"' EXIT
# the lock's setuptools entry: its line and the hash lines continued from it
awk '/^setuptools==/ { take = 1 } take { print } take && !/\\$/ { exit }' "$lock" >"$build"
[ -s "$build" ] || { echo "install-lock.sh: $lock pins no setuptools (the build backend)" >&2; exit 1; }
"$python" -m pip install --require-hashes --no-deps "$@" -r "$build"
"$python" -m pip install --require-hashes --no-deps --no-build-isolation "$@" -r "$lock"
