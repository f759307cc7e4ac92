#!/usr/bin/env bash
# GPU: the one-row reductions with batched products (bmm of one row or one column) taken in
# (agent/engine/onerow.py): Falcon-H1-0.5B's compiled decode step at 32K (its Mamba-2 mixers' batched
# products; bench/engine/decode_overhead.py, a fresh process), its logits against a full recompute at
# 2K (bench/engine/decode_agreement.py), then Qwen2.5-0.5B at 32K to see that a Transformer's step
# did not change.
# Run from the repository root after the device README's install line; writes under $OUT (copied to
# results/engine/decode-tuning/<card>/one-row-batched/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_one_row_batched.sh
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/gpu_one_row_batched.sh  # $revision" >>"$OUT/command.txt"
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
started=$SECONDS
timeout 260 python3 "$repo/bench/engine/decode_overhead.py" --models falcon-h1-0.5b --length 32768 \
  --out "$OUT/falcon-32k-one-row-batched.json" 2>>"$OUT/batched.err" | tail -1
echo "falcon: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
started=$SECONDS
timeout 150 python3 "$repo/bench/engine/decode_agreement.py" --models falcon-h1-0.5b --length 2048 \
  --attention sdpa-gqa --out "$OUT/agreement-falcon-2k.json" 2>>"$OUT/batched.err" | tail -8
echo "agreement: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
started=$SECONDS
timeout 120 python3 "$repo/bench/engine/decode_overhead.py" --models qwen2.5-0.5b --length 32768 \
  --out "$OUT/qwen-32k-one-row-batched.json" 2>>"$OUT/batched.err" | tail -1
echo "qwen: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
