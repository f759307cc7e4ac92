#!/usr/bin/env bash
# H200, session 3, second call (the first was bench/h200_remaining.sh). Run from the repository root
# after the device README's install line; writes at most 8 files under $OUT (what comes back).
#  1. TTFT/decode curves past 128K: Qwen2.5-0.5B, Llama-3.2-1B, Mamba-790m and Mamba2-780m at 256K,
#     Mamba2-780m at 320K, with the telemetry observer (NVML at 20 Hz).
#  2. The sampler's TTFT overhead at 4K tokens, paired per prefill (results/telemetry); the first try in
#     h200_remaining.sh printed its summary but its JSON did not come back (a ninth file).
#  3. Run-to-run spread of operator shares: Mamba2-130m (native) profiled twice more, each in its own
#     process, with Triton's autotuning choices printed (results/profiling: a repeat in
#     h200_remaining.sh ran its SSD and norm kernels ~1.75x faster than the first session's run).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
plans="$repo/bench/engine/plans"
timeout 280 ctxscope agent run "$plans/h200-curves-256k.toml" --out /tmp/c256.jsonl --no-progress 2>>"$OUT/curves.err" | tail -6
timeout 80 ctxscope agent run "$plans/h200-curves-mamba2-320k.toml" --out /tmp/c320.jsonl --no-progress 2>>"$OUT/curves.err" | tail -3
cat /tmp/c256.jsonl /tmp/c320.jsonl >"$OUT/curves-long.jsonl"
(cd "$repo/bench/telemetry" && timeout 90 python3 h200_overhead.py --out "$OUT" --paired --pairs 400)
for run in a b; do
  TRITON_PRINT_AUTOTUNING=1 timeout 50 python3 "$repo/bench/profiling/h200_operator_shares.py" \
    --out "/tmp/prof_$run" --models mamba2-130m --lengths 1024,16384,131072 --budget-s 45 | tail -4
done
tar czf "$OUT/prof_repeats.tgz" -C /tmp prof_a prof_b
