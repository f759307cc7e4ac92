#!/usr/bin/env bash
# The drift stage of CI: the zoo, engine and contract tests in a fresh environment that takes the newest
# releases of the libraries whose changes have broken the product before (transformers, pydantic,
# paho-mqtt, fastapi), everything else as pyproject.toml allows, torch pinned to the CPU build.
# A failure here means an upstream release changed behaviour the day it came out: fix the code (or cap
# the range in pyproject.toml with the reason) before it reaches a user.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${NEWEST_VENV:-.venv-newest}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
NEWEST=(transformers pydantic paho-mqtt fastapi)

rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
# pyproject.toml's ranges, less the upper bounds of the four libraries followed here
requirements=$("$VENV/bin/python" - "${NEWEST[@]}" <<'PY'
import re
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
followed = set(sys.argv[1:])
extras = project["optional-dependencies"]
for requirement in project["dependencies"] + extras["agent"] + extras["collector"] + extras["dev"]:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
    if name == "torch":
        continue
    print(name if name in followed else requirement)
PY
)
mapfile -t requirements <<<"$requirements"
"$VENV/bin/python" -m pip install --quiet --upgrade "${requirements[@]}"
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
echo "newest releases under test:"
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE "^(torch|transformers|kernels|pydantic|paho-mqtt|fastapi|huggingface-hub)=="
"$VENV/bin/python" -m pytest tests/agent/zoo tests/agent/engine tests/shared -p no:cacheprovider -q
