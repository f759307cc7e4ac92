#!/usr/bin/env bash
# GPU: one decode step of attention, cuDNN with the static cache's float mask (the engine's choice)
# against FlashAttention-2 called without a mask, the written length given on the device (`seqused_k`),
# and SDPA's flash backend on the written positions only, at the three Transformer/hybrid shapes and
# 4K-64K cached positions (bench/engine/decode_attention.py). Writes under $OUT.
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_flash_decode.sh
set -uo pipefail
export OUT
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/gpu_flash_decode.sh  # $revision" >>"$OUT/command.txt"
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
timeout 200 python3 "$repo/bench/engine/decode_attention.py" --lengths 4096,16384,32768,65536 \
  --kernels sdpa-cudnn,flash-seqused,sdpa-flash-sliced --out "$OUT/flash-decode.json" 2>>"$OUT/flash-decode.err"
echo "decode_attention: exit $?"
