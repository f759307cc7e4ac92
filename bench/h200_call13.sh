#!/usr/bin/env bash
# H200, session 4, second call. Run from the repository root after the device README's install line;
# writes three files under $OUT.
#  1. The hybrids' curves 1K-128K with graph-captured decode (their earlier 1K-128K points decoded
#     eagerly).
#  2. Qwen2.5-0.5B at 512K tokens.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
plans="$repo/bench/engine/plans"
timeout 330 ctxscope agent run "$plans/h200-curves-hybrid-graph.toml" --out /tmp/hybrid-graph.jsonl \
  --no-progress 2>>"$OUT/curves.err" | tail -14
timeout 230 ctxscope agent run "$plans/h200-curves-qwen-512k.toml" --out /tmp/qwen-512k.jsonl \
  --no-progress 2>>"$OUT/curves.err" | tail -3
cat /tmp/hybrid-graph.jsonl /tmp/qwen-512k.jsonl >"$OUT/curves-graph.jsonl"
