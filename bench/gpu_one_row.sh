#!/usr/bin/env bash
# GPU: the compiled decode step with the engine's one-row reductions (agent/engine/onerow.py) at 32K:
# Qwen2.5-0.5B without them and with them in the same call (the comparison), then Llama-3.2-1B and
# Falcon-H1-0.5B with them (bench/engine/decode_overhead.py, a fresh process each); then every decode
# path's logits against a full recompute for Qwen2.5-0.5B at 4K (bench/engine/decode_agreement.py);
# last, Mamba2-780m, whose compiled mamba_ssm step takes the same rewrite.
# Run from the repository root after the device README's install line; writes under $OUT (copied to
# results/engine/decode-tuning/<card>/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_one_row.sh
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/gpu_one_row.sh  # $revision" >>"$OUT/command.txt"
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
step() {  # model, file stem, seconds, extra options
  started=$SECONDS
  timeout "$3" python3 "$repo/bench/engine/decode_overhead.py" --models "$1" --length 32768 "${@:4}" \
    --out "$OUT/$2.json" 2>>"$OUT/one-row.err" | tail -1
  echo "$2: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
}
step qwen2.5-0.5b qwen-32k-without-one-row 150 --without-one-row
step qwen2.5-0.5b qwen-32k-one-row 150
step llama3.2-1b llama-32k-one-row 150
step falcon-h1-0.5b falcon-32k-one-row 240
started=$SECONDS
timeout 150 python3 "$repo/bench/engine/decode_agreement.py" --models qwen2.5-0.5b --length 4096 \
  --attention sdpa-gqa --out "$OUT/agreement-qwen-4k.json" 2>>"$OUT/one-row.err" | tail -8
echo "agreement: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
step mamba2-780m mamba2-32k-one-row 150  # the compiled mamba_ssm step takes the rewrite too (last: cut first)
