#!/usr/bin/env bash
# GPU: Falcon-H1-0.5B's compiled decode step through `ctxscope agent run` (plan
# bench/engine/plans/gpu-hybrid-package-ops.toml): the record's kernel-package operations of the
# compiled step's graph (details.decode_package_ops) and its ssm_step label. Run from the repository
# root after the device README's install line; writes under $OUT.
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_package_ops.sh
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
echo "bash bench/gpu_package_ops.sh  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv >>"$OUT/gpu.txt"
cd /tmp || exit 1
started=$SECONDS
timeout 280 ctxscope agent run "$repo/bench/engine/plans/gpu-hybrid-package-ops.toml" \
  --out "$OUT/package-ops.jsonl" --no-progress 2>>"$OUT/package-ops.err" | tail -1
echo "agent run: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
python3 - "$OUT/package-ops.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    record = json.loads(line)
    if record.get("kind") == "result":
        impl, details = record.get("implementation", {}), record.get("details", {})
        print(record.get("outcome"), impl.get("decode_path"), "| ssm_step:", impl.get("ssm_step"))
        print("decode_package_ops:", details.get("decode_package_ops"))
PY
