#!/usr/bin/env bash
# H200, session 4, fourth call. Run from the repository root after the device README's install line;
# writes at most four files under $OUT.
#  1. Falcon-H1-0.5B at 512K tokens.
#  2. Native Mamba2-130m profiled with Triton's autotuning printed (call 14's try was cut while the
#     fresh machine compiled its kernels), to check the choices that profile records now carry
#     (details.triton_autotune) against Triton's own log.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
timeout 230 ctxscope agent run "$repo/bench/engine/plans/h200-curves-falcon-512k.toml" \
  --out "$OUT/curves-falcon-512k.jsonl" --no-progress 2>>"$OUT/curves.err" | tail -3
TRITON_PRINT_AUTOTUNING=1 timeout 130 python3 "$repo/bench/profiling/h200_operator_shares.py" \
  --out /tmp/prof_d --models mamba2-130m --lengths 1024,16384 --budget-s 120 >/tmp/prof_d.log 2>&1
tail -4 /tmp/prof_d.log
tar czf "$OUT/prof_autotune.tgz" -C /tmp prof_d prof_d.log
