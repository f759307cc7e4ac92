#!/usr/bin/env bash
# H200 session 2, call 3. (1) The capped searches call 2 left unfinished, restarted from the bracket
# call 2 had narrowed them to (both ends probed again). (2) Uncapped, default mode: one probe per
# model above its 24 GiB limit, two models at a time (the pair's peaks sum far below the GPU's
# 139.8 GiB); Mamba2-780m at the length that faulted under the cap. (3) The sampler's TTFT overhead
# at 4K tokens and the bursty energy check at 20/50/100 Hz.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH
repo=$PWD
cd /tmp || exit 1
mkdir -p /tmp/mx6 /tmp/mxu
# shellcheck disable=SC2016  # the single-quoted script expands its own positional arguments
timeout 240 xargs -P 5 -L 1 -a "$repo/bench/engine/maxctx_capped_jobs_2.txt" bash -c \
  'ctxscope agent maxctx "$0" --precision "$1" --logits "$2" --memory-cap 24GiB --start "$3" \
   --upper-guess "$4" --max-tokens "$5" --tolerance 0.01 --probe-timeout 150 \
   --out "/tmp/mx6/$0_$1_$2.json" 2>>/tmp/mx6/log.txt'
python3 "$repo/bench/engine/merge_maxctx.py" /tmp/mx6/*.json >"$OUT/maxctx_capped_2.json"
cp /tmp/mx6/log.txt "$OUT/maxctx_capped_2.log"
probe() {  # exactly one uncapped probe: --start = --max-tokens, and no bisection after a failure
  ctxscope agent maxctx "$1" --precision bf16 --logits last --start "$2" --max-tokens "$2" \
    --step 100000000 --probe-timeout 120 --out "/tmp/mxu/$1.json" 2>>/tmp/mxu/log.txt
}
export -f probe
# shellcheck disable=SC2016  # the single-quoted script expands its own positional arguments
timeout 200 bash -c 'while read -r m1 n1 m2 n2; do
  probe "$m1" "$n1" & probe "$m2" "$n2" & wait
done <'"$repo/bench/engine/maxctx_uncapped_pairs.txt"
python3 "$repo/bench/engine/merge_maxctx.py" /tmp/mxu/*.json >"$OUT/maxctx_uncapped.json"
cp /tmp/mxu/log.txt "$OUT/maxctx_uncapped.log"
cd "$repo/bench/telemetry" || exit 1
timeout 100 python3 h200_overhead.py --out "$OUT/telemetry" 2>&1 | tail -8
