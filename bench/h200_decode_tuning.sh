#!/usr/bin/env bash
# H200: (1) one decode step of attention at 32K and 128K per kernel (SDPA backends with native GQA,
# FlexAttention's split-KV decode kernel), in the attention shapes of Qwen2.5-0.5B, Llama-3.2-1B and
# Falcon-H1-0.5B (bench/engine/decode_attention.py); (2) what inductor's options save on Qwen2.5-0.5B's
# compiled decode step at 32K, each in a fresh process with the default compile in the same call as the
# baseline (bench/engine/decode_overhead.py); (3) the timed choice between a mamba_ssm model's two
# decode paths (decode = "auto" builds both, times each and keeps the faster) through
# `ctxscope agent run` at 32K, for the models in $SSM ("model:seconds ..."; none when empty); then the
# inductor options of the second argument, if any (last, so that a cut call loses those first).
# An option word is a comma-separated list of inductor flags, `default` for none, and `decompose_mm`
# for the one-row matrix products as reductions (decode_overhead.py --decompose-mm); MODEL names the
# model (default qwen2.5-0.5b).
# Run from the repository root after the device README's install line; writes under $OUT (copied to
# results/engine/decode-tuning/).
#   SSM="mamba2-780m:160" CTXSCOPE_GIT_REVISION=<commit> bash bench/h200_decode_tuning.sh "default freezing" \
#     coordinate_descent_tuning
# (max_autotune made the step 25% slower on an H100: results/engine/decode-tuning/.) A fresh process
# needs well over 85 s for one 32K SSM point (model load, Triton autotuning, compiling the step).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
MODEL=${MODEL:-qwen2.5-0.5b}
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "MODEL=$MODEL ${SSM:+SSM=\"$SSM\" }${ATTENTION+ATTENTION=\"$ATTENTION\" }bash bench/h200_decode_tuning.sh \"$1\" ${2:+\"$2\"}  # $revision" >>"$OUT/command.txt"
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
if [ "${ATTENTION:-1}" != 0 ]; then  # ATTENTION=0 skips the attention kernels
  timeout 150 python3 "$repo/bench/engine/decode_attention.py" --lengths 32768,131072 \
    --out "$OUT/decode-attention.json" 2>>"$OUT/tuning.err"
fi
tune() {  # $MODEL's compiled step at 32K with each of the given inductor options (a word: a,b,...)
  for flags in $1; do
    started=$SECONDS
    inductor=${flags/default/}
    decompose=()
    if [[ ",$inductor," == *,decompose_mm,* ]]; then  # the one-row matrix products as reductions
      decompose=(--decompose-mm 16384)
      inductor=$(sed 's/decompose_mm//; s/,,/,/; s/^,//; s/,$//' <<<"$inductor")
    fi
    timeout 150 python3 "$repo/bench/engine/decode_overhead.py" --models "$MODEL" --length 32768 \
      --inductor "$inductor" "${decompose[@]}" --out "$OUT/${MODEL%%[0-9.-]*}-32k-${flags//,/+}.json" \
      2>>"$OUT/tuning.err" | tail -1
    echo "$MODEL, inductor '$flags': exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
  done
}
tune "$1"
cd "$repo" || exit 1
if [ -n "${SSM:-}" ]; then
  LENGTHS="32768" bash bench/h200_curves_fair.sh "$SSM"
  mv "$OUT/curves-${SSM%%:*}.tgz" "$OUT/ssm-choice-${SSM%%:*}.tgz"
fi
cd /tmp || exit 1
tune "${2:-}"
