#!/usr/bin/env bash
# H200, session 4, third call. Run from the repository root after the device README's install line;
# writes at most five files under $OUT.
#  1. Mamba2-780m at 256K tokens (cut from calls 9 and 12 by their limits; on a fresh machine the
#     first mamba_ssm process also compiles and autotunes its Triton kernels).
#  2. Native Mamba2-130m profiled once more, with Triton's autotuning printed, to check the choices
#     that every record now carries (details.triton_autotune) against Triton's own log.
#  3. Qwen2.5-0.5B at 512K tokens (cut from call 13 at 230 s; its prefills there run for tens of seconds).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
plans="$repo/agent/engine/plans"
timeout 170 ctxscope agent run "$plans/h200-curves-mamba2-256k.toml" --out /tmp/mamba2-256k.jsonl \
  --no-progress 2>>"$OUT/curves.err" | tail -3
TRITON_PRINT_AUTOTUNING=1 timeout 60 python3 "$repo/bench/profiling/h200_operator_shares.py" \
  --out /tmp/prof_c --models mamba2-130m --lengths 1024,16384,131072 --budget-s 50 >/tmp/prof_c.log 2>&1
tail -4 /tmp/prof_c.log
tar czf "$OUT/prof_autotune.tgz" -C /tmp prof_c prof_c.log
timeout 320 ctxscope agent run "$plans/h200-curves-qwen-512k.toml" --out /tmp/qwen-512k.jsonl \
  --no-progress 2>>"$OUT/curves.err" | tail -3
cat /tmp/mamba2-256k.jsonl /tmp/qwen-512k.jsonl >"$OUT/curves-long.jsonl"
