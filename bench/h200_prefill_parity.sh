#!/usr/bin/env bash
# H200: prefill through the agent against the model's library called directly, same process and loop
# (bench/engine/prefill_vs_native.py), for the six study models at one length (default 65536 tokens).
# Run from the repository root after the device README's install line; writes under $OUT (copied to
# results/engine/prefill-parity/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/h200_prefill_parity.sh "qwen2.5-0.5b:60 llama3.2-1b:70"
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD LENGTH=${LENGTH:-65536}
echo "LENGTH=$LENGTH bash bench/h200_prefill_parity.sh \"$1\"  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
mkdir -p "$OUT/parity"
cd /tmp || exit 1
for entry in $1; do
  model=${entry%%:*} limit=${entry##*:}
  timeout "$limit" python3 "$repo/bench/engine/prefill_vs_native.py" --model "$model" --length "$LENGTH" \
    --out "$OUT/parity/$model.json" 2>"$OUT/parity/$model.err" | tail -1
  echo "$model: exit ${PIPESTATUS[0]}"
done
cd "$OUT" && tar czf prefill-parity.tgz ./parity && rm -rf ./parity
