#!/usr/bin/env bash
# H200, session 3, third call. Run from the repository root after the device README's install line;
# writes five files under $OUT.
#  1. The hybrids' graph-captured decode (StaticCache with hybrid layers): Falcon-H1-0.5B and
#     Zamba2-1.2B at 4K, 16K and 128K, fast path against eager, and the two paths' logits compared
#     step by step at 4K.
#  2. Curves past 128K for the hybrids (Falcon-H1 at 256K, Zamba2 at 240K) and Mamba-790m at 512K
#     and 1M tokens, with the telemetry observer (NVML at 20 Hz).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
timeout 180 python3 "$repo/bench/engine/decode_paths.py" --models falcon-h1-0.5b,zamba2-1.2b \
  --lengths 4096,16384,131072 --decode-tokens 32 --out "$OUT/decode_paths_hybrids.json" 2>>"$OUT/curves.err"
plans="$repo/bench/engine/plans"
for plan in falcon-256k zamba2-240k; do
  timeout "$([ $plan = falcon-256k ] && echo 90 || echo 130)" ctxscope agent run "$plans/h200-curves-$plan.toml" \
    --out "/tmp/$plan.jsonl" --no-progress 2>>"$OUT/curves.err" | tail -3
done
cat /tmp/falcon-256k.jsonl /tmp/zamba2-240k.jsonl >"$OUT/curves-hybrid-long.jsonl"
timeout 120 ctxscope agent run "$plans/h200-curves-mamba-long.toml" --out "$OUT/curves-mamba-long.jsonl" \
  --no-progress 2>>"$OUT/curves.err" | tail -3
