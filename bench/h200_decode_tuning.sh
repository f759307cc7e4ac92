#!/usr/bin/env bash
# H200: (1) the timed choice between a mamba_ssm model's two decode paths (decode = "auto" builds both,
# times each and keeps the faster) through `ctxscope agent run` at 32K, for Mamba-790m and Mamba2-780m;
# (2) what inductor's options save on Qwen2.5-0.5B's compiled decode step at 32K, each in a fresh
# process with the default compile in the same call as the baseline (bench/engine/decode_overhead.py).
# Run from the repository root after the device README's install line; writes under $OUT (copied to
# results/engine/decode-tuning/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/h200_decode_tuning.sh "default freezing"
# (max_autotune made the step 25% slower on an H100: results/engine/decode-tuning/.) A fresh process
# needs well over 85 s for one 32K SSM point (model load, Triton autotuning, compiling the step).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/h200_decode_tuning.sh \"$1\"  # $revision" >>"$OUT/command.txt"
LENGTHS="32768" bash bench/h200_curves_fair.sh "mamba-790m:160 mamba2-780m:160"
mv "$OUT/curves-fair.tgz" "$OUT/ssm-choice.tgz"
cd /tmp || exit 1
for flags in $1; do
  started=$SECONDS
  inductor=${flags/default/}
  timeout 120 python3 "$repo/bench/engine/decode_overhead.py" --models qwen2.5-0.5b --length 32768 \
    --inductor "$inductor" --out "$OUT/qwen-32k-$flags.json" 2>>"$OUT/tuning.err" | tail -1
  echo "qwen2.5-0.5b, inductor '$inductor': exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
done
