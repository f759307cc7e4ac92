#!/usr/bin/env bash
# Prepared for the next GPU session (not run yet). Run from the repository root after the device
# README's install line; writes three files under $OUT.
#  1. The static decoder's state restore and replay check on the GPU: every decode path of Zamba2-1.2B
#     and Falcon-H1-0.5B against a full recompute (results/engine: Zamba2's graph path disagreed
#     before the restore existed).
#  2. The hybrids' curves 1K-128K with graph-captured decode.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
timeout 120 python3 "$repo/bench/engine/decode_agreement.py" --models zamba2-1.2b,falcon-h1-0.5b \
  --length 2048 --steps 6 --out "$OUT/decode_agreement.json"
timeout 420 ctxscope agent run "$repo/agent/engine/plans/h200-curves-hybrid-graph.toml" \
  --out "$OUT/curves-hybrid-graph.jsonl" --no-progress 2>"$OUT/curves.err" | tail -12
