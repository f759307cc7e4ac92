#!/usr/bin/env bash
# H200 session 2, call 2: the max-context matrix under a 24 GiB cap to 1%, study mode (all-position
# logits; fp16 for the mamba_ssm models, as the study ran them) and default mode (last-token logits,
# bf16). Five searches at a time: each child is capped at 24 GiB, so they cannot take memory from
# each other. Each job line: model precision logits start upper-guess max-tokens; start and guess
# bracket the limit estimated from earlier runs' peaks (the search still grows or bisects past a
# wrong guess). Run from the repository root with the project installed in /tmp/site.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH
jobs=$PWD/bench/engine/maxctx_capped_jobs.txt
merge=$PWD/bench/engine/merge_maxctx.py
cd /tmp || exit 1
mkdir -p /tmp/mx5
# shellcheck disable=SC2016  # the single-quoted script expands its own positional arguments
timeout "${MAXCTX_BUDGET_S:-500}" xargs -P 5 -L 1 -a "$jobs" bash -c \
  'ctxscope agent maxctx "$0" --precision "$1" --logits "$2" --memory-cap 24GiB --start "$3" \
   --upper-guess "$4" --max-tokens "$5" --tolerance 0.01 --probe-timeout 150 \
   --out "/tmp/mx5/$0_$1_$2.json" 2>>/tmp/mx5/log.txt'
python3 "$merge" /tmp/mx5/*.json >"$OUT/maxctx_capped.json"
cp /tmp/mx5/log.txt "$OUT/maxctx_capped.log"
grep -h "tokens" /tmp/mx5/log.txt | tail -3
