#!/usr/bin/env bash
# H200 call 2: TTFT/decode curves on a quiet GPU, then the max-context matrix under a 24 GiB cap:
# study mode (all-position logits; fp16 for the mamba_ssm models, as the study ran them) and the
# default mode (last-token logits, bf16), five searches at a time (each child capped at 24 GiB, so
# they cannot take memory from each other). Run from the repository root with the project installed
# in /tmp/site; writes under $OUT.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH
timeout 180 ctxscope agent run bench/engine/plans/h200-curves.toml --out "$OUT/curves.jsonl" --no-progress \
  2>"$OUT/curves.err" | tail -34
mkdir -p /tmp/mx
# shellcheck disable=SC2016  # the single-quoted script expands its own positional arguments
timeout 300 xargs -P 5 -L 1 -a bench/engine/maxctx_jobs.txt bash -c \
  'ctxscope agent maxctx "$0" --precision "$1" --logits "$2" --memory-cap 24GiB --start 16384 --max-tokens 524288 \
   --tolerance 0.02 --probe-timeout 90 --out "/tmp/mx/$0_$2.json" 2>>/tmp/mx/log.txt'
python3 bench/engine/merge_maxctx.py /tmp/mx/*.json >"$OUT/maxctx_capped.json"
cp /tmp/mx/log.txt "$OUT/maxctx_capped.log"
