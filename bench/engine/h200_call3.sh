#!/usr/bin/env bash
# H200 call 3 (short): the study-mode max-context searches under a 24 GiB cap, five at a time,
# starting at 32K tokens, 5% tolerance (the device budget allowed no finer search).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH
mkdir -p /tmp/mx3
# shellcheck disable=SC2016  # the single-quoted script expands its own positional arguments
grep ' all$' bench/engine/maxctx_jobs.txt | timeout 140 xargs -P 5 -L 1 bash -c \
  'ctxscope agent maxctx "$0" --precision "$1" --logits "$2" --memory-cap 24GiB --start 32768 --max-tokens 524288 \
   --tolerance 0.05 --probe-timeout 60 --out "/tmp/mx3/$0_$2.json" 2>>/tmp/mx3/log.txt'
python3 bench/engine/merge_maxctx.py /tmp/mx3/*.json >"$OUT/maxctx_study_capped.json"
cp /tmp/mx3/log.txt "$OUT/maxctx_study_capped.log"
