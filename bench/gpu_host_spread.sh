#!/usr/bin/env bash
# How far host-bound prefill moves between fresh processes on one GPU, beside that GPU's calibration
# (`ctxscope agent calibrate`: its host cost per eager op is what prediction scales host time by).
# Plan bench/engine/plans/gpu-host-spread.toml. Run from the repository root after the device README's
# install line, with CTXSCOPE_GIT_REVISION set; writes under $OUT (copied to results/prediction/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_host_spread.sh
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
cd /tmp || exit 1
echo "bash bench/gpu_host_spread.sh  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu \
  --format=csv >>"$OUT/gpu.txt"
started=$SECONDS
timeout 150 ctxscope agent calibrate --torch-device cuda --budget-s 60 --out "$OUT/host-calibration.jsonl" \
  2>"$OUT/host-calibration.err" | tee "$OUT/host-calibration.txt"
echo "calibrate: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
started=$SECONDS
timeout 330 ctxscope agent run "$repo/bench/engine/plans/gpu-host-spread.toml" --out "$OUT/host-spread.jsonl" \
  --no-progress 2>"$OUT/host-spread.err" | tail -1
echo "spread: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
python3 - "$OUT/host-spread.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("kind") != "result":
        continue
    spread = r.get("details", {}).get("process_spread", {}).get("ttft", {})
    medians = ", ".join(f"{m:.2f}" for m in spread.get("process_medians", []))
    print(f"{r['model']:15} {r['context_len']:>6} {r.get('outcome'):8} TTFT per process [{medians}] ms,"
          f" between {100 * spread.get('between_rel_range', float('nan')):.1f}%")
PY
gzip -f "$OUT/host-spread.jsonl"
