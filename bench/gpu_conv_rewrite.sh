#!/usr/bin/env bash
# GPU: the one-row pass's rewrite of depthwise convolutions of few positions (agent/engine/onerow.py), in
# parts (each measurement a fresh process):
#   step: Falcon-H1-0.5B's compiled decode step at 32K without the rewrite (`--without-conv`, inductor's
#     caches off in that process) and with it (the engine's default), bench/engine/decode_overhead.py;
#   agreement: its decode paths' logits against a full recompute at 2K, 6 steps
#     (bench/engine/decode_agreement.py --attention sdpa-gqa).
# Run from the repository root after the device README's install line (kernel, pydantic and paho-mqtt
# wheels carried); writes under $OUT (copied to results/engine/decode-tuning/<card>/conv-rewrite/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_conv_rewrite.sh step
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_conv_rewrite.sh agreement
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/gpu_conv_rewrite.sh $1  # $revision" >>"$OUT/command.txt"
cd "$OUT" || exit 1  # outputs named relative to it, so that no machine path is recorded
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>gpu.txt
if [ "$1" = agreement ]; then
  started=$SECONDS
  timeout 240 python3 "$repo/bench/engine/decode_agreement.py" --models falcon-h1-0.5b --length 2048 \
    --attention sdpa-gqa --out agreement-falcon-h1-0.5b-2k.json 2>>agreement.err | tail -8
  echo "agreement: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
  exit 0
fi
for variant in without-conv with-conv; do
  started=$SECONDS
  flag=""
  [ "$variant" = without-conv ] && flag=--without-conv
  timeout 280 python3 "$repo/bench/engine/decode_overhead.py" --models falcon-h1-0.5b --length 32768 $flag \
    --out "falcon-h1-0.5b-32k-$variant.json" 2>>step.err | tail -1
  echo "falcon-h1-0.5b $variant: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
done
