#!/usr/bin/env bash
# The GPU items the issues still lack, in one call of under ten minutes on the lent H200. Run from the
# repository root after the device README's install line (project and staged wheels in /tmp/site);
# writes under $OUT. Not run yet.
#  1. Falcon-H1-0.5B's two capped max-context searches, restarted from the intervals the earlier
#     searches reached (results/engine: study mode 155648-159744, default mode 458752-475136), to 1%.
#  2. The sampler's TTFT overhead at 4K tokens, paired per prefill (results/telemetry).
#  3. The profiled decode step and the HF+kernels Mamba2 variant (results/profiling).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
mkdir -p "$OUT/maxctx" "$OUT/telemetry" "$OUT/prof"
search() {  # model logits start upper-guess
  timeout 225 ctxscope agent maxctx "$1" --precision bf16 --logits "$2" --memory-cap 24GiB --start "$3" \
    --upper-guess "$4" --max-tokens 1048576 --tolerance 0.01 --probe-timeout 150 \
    --out "$OUT/maxctx/$1_bf16_$2.json" 2>>"$OUT/maxctx/log.txt"
}
timeout 230 bash -c "$(declare -f search); search falcon-h1-0.5b all 155648 159744 & search falcon-h1-0.5b last 458752 475136 & wait"
(cd "$repo/bench/telemetry" && timeout 120 python3 h200_overhead.py --out "$OUT/telemetry" --paired)
timeout 190 python3 "$repo/bench/profiling/h200_operator_shares.py" --out "$OUT/prof" \
  --models mamba2-130m,qwen2.5-0.5b --lengths 1024,16384,131072 --decode --hf-mamba2 --budget-s 170
