#!/usr/bin/env bash
# GPU machine: follow docker/agent-cuda.Dockerfile's steps as written (docker/agent-cuda-steps.sh, with
# the staged kernel wheels instead of the kernel build stage, offline), then run one plan through the
# installed agent with --require-fast-kernels. Run from the repository root after staging (see the
# command in jetson/README.md, "Checking the CUDA image steps"); writes steps.log, run.jsonl, run.err
# under $OUT.
set -uo pipefail
: "${OUT:?set OUT to an output directory}"
venv=/tmp/ctxscope-agent-venv
VENV=$venv KERNEL_WHEELS=.device-wheels WHEELS=.device-wheels OFFLINE=1 \
  LOCK_PACKAGES="pydantic pydantic-core annotated-types typing-inspection paho-mqtt" \
  bash docker/agent-cuda-steps.sh >"$OUT/steps.log" 2>&1
echo "steps: rc=$?"; tail -4 "$OUT/steps.log"
timeout 150 "$venv/bin/ctxscope" agent run bench/deploy/agent-cuda-check.toml --require-fast-kernels \
  --out "$OUT/run.jsonl" --no-progress 2>"$OUT/run.err" | tail -8
echo "run: rc=${PIPESTATUS[0]}"
"$venv/bin/python" - "$OUT/run.jsonl" <<'PY'
import json
import sys


def find(row, names):
    """The first values of these keys anywhere in a nested record."""
    found = {}
    stack = [row]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in names and key not in found and not isinstance(value, (dict, list)):
                    found[key] = value
                stack.append(value)
    return found


for line in open(sys.argv[1]):
    print(find(json.loads(line), {"model", "context_len", "context_length", "status", "runtime", "error"}))
PY
