#!/usr/bin/env bash
# H200 session 2, call 1: Zamba2-1.2B operator shares (the one model the profiling run had not
# reached), then TTFT/decode curves of Mamba2-780m, Falcon-H1-0.5B and Zamba2-1.2B from 1K to 128K
# with the telemetry observer on (NVML at 20 Hz: energy per phase in every result).
# Run from the repository root with the project installed in /tmp/site; writes under $OUT.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH
cd /tmp || exit 1  # the installed package, not the checkout, must be imported
repo=$OLDPWD
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
timeout 200 python3 "$repo/bench/profiling/h200_operator_shares.py" --out "$OUT/prof" \
  --models zamba2-1.2b --budget-s 180 >"$OUT/prof.log" 2>&1
echo "profiling exit $?"
timeout 330 ctxscope agent run "$repo/bench/engine/plans/h200-curves-ssm-hybrid.toml" \
  --out "$OUT/curves-ssm-hybrid.jsonl" --no-progress 2>"$OUT/curves.err" | tail -20
echo "curves exit ${PIPESTATUS[0]}"
tail -5 "$OUT/curves.err"
