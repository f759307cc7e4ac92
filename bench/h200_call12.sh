#!/usr/bin/env bash
# H200, session 4, first call. Run from the repository root after the device README's install line;
# writes at most six files under $OUT.
#  1. The static decoder's state restore and replay check on the GPU: every decode path of Zamba2-1.2B
#     and Falcon-H1-0.5B against a full recompute (call 11: Zamba2's graph path disagreed before the
#     restore existed).
#  2. Zamba2-1.2B's graph decode against eager at 4K and 16K again, with the restore (call 10's
#     graph rows ran before it; its 16K eager row was cut by the call's limit).
#  3. Curve points: Mamba2-780m at 256K (cut from call 9) and Zamba2-1.2B at 240K again with the
#     restored graph path.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
timeout 130 python3 "$repo/bench/engine/decode_agreement.py" --models zamba2-1.2b,falcon-h1-0.5b \
  --length 2048 --steps 6 --out "$OUT/decode_agreement.json" 2>>"$OUT/curves.err"
timeout 120 python3 "$repo/bench/engine/decode_paths.py" --models zamba2-1.2b --lengths 4096,16384 \
  --decode-tokens 32 --out "$OUT/decode_paths_zamba2.json" 2>>"$OUT/curves.err"
plans="$repo/agent/engine/plans"
timeout 80 ctxscope agent run "$plans/h200-curves-mamba2-256k.toml" --out /tmp/mamba2-256k.jsonl \
  --no-progress 2>>"$OUT/curves.err" | tail -3
timeout 130 ctxscope agent run "$plans/h200-curves-zamba2-240k.toml" --out /tmp/zamba2-240k.jsonl \
  --no-progress 2>>"$OUT/curves.err" | tail -3
cat /tmp/mamba2-256k.jsonl /tmp/zamba2-240k.jsonl >"$OUT/curves-long.jsonl"
