#!/usr/bin/env bash
# H200: the SSMs' decode on the compiled mamba_ssm step. First every native decode path of Mamba2-780m
# and Mamba-790m against a full recompute (bench/engine/decode_agreement.py), then their fair-path
# curves (bench/h200_curves_fair.sh, decode = "auto") at the lengths the Transformers and hybrids ran.
# Run from the repository root after the device README's install line; writes under $OUT (copied to
# results/engine/ssm-compiled/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/h200_ssm_compiled.sh "mamba2-780m:160 mamba-790m:140"
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
echo "bash bench/h200_ssm_compiled.sh \"$1\"  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
(cd /tmp && timeout 170 python3 "$repo/bench/engine/decode_agreement.py" --models mamba2-780m,mamba-790m \
  --attention sdpa-gqa --length 2048 --steps 6 --out "$OUT/decode_agreement_native.json" \
  2>"$OUT/agreement.err" | tail -12; echo "agreement: exit ${PIPESTATUS[0]}")
LENGTHS="4096 32768 131072" bash bench/h200_curves_fair.sh "$1"
