#!/usr/bin/env bash
# GPU (Hopper): programmatic dependent launch (PDL) in the compiled decode step. Inductor's
# `triton.enable_pdl` makes each generated Triton kernel start while the one before it finishes (it
# waits on the data it reads with `gdc_wait`), which a launch-bound step of ~500 small kernels may
# gain from. Falcon-H1-0.5B and Qwen2.5-0.5B at 16K, each without PDL and with it (the engine's default
# since 1e4a36c; at 75da504, where this ran first, the runs were the engine's compile then without it,
# `default`, and `--inductor triton.enable_pdl`), each a fresh process (bench/engine/decode_overhead.py,
# 40 costliest kernels profiled); then
# Falcon-H1's logits against a full recompute at 2K with PDL on (bench/engine/decode_agreement.py,
# the option set through its environment variable, TORCHINDUCTOR_ENABLE_PDL=1).
# Run from the repository root after the device README's install line; writes under $OUT.
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_pdl.sh
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/gpu_pdl.sh  # $revision" >>"$OUT/command.txt"
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
python3 -c 'import torch, torch._inductor.config as c; print("torch", torch.__version__, "inductor triton.enable_pdl:", hasattr(c.triton, "enable_pdl"))' | tee -a "$OUT/gpu.txt"
overhead() {  # model, limit (s), tag, extra arguments
  local model=$1 limit=$2 tag=$3 started=$SECONDS
  shift 3
  timeout "$limit" python3 "$repo/bench/engine/decode_overhead.py" --models "$model" --length 16384 --top 40 \
    --out "$OUT/$model-16k-$tag.json" "$@" 2>>"$OUT/pdl.err" | tail -1
  echo "$model $tag: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
}
overhead falcon-h1-0.5b 200 without-pdl --without-pdl
overhead falcon-h1-0.5b 130 pdl
overhead qwen2.5-0.5b 90 pdl
overhead qwen2.5-0.5b 90 without-pdl --without-pdl
started=$SECONDS
TORCHINDUCTOR_ENABLE_PDL=1 timeout 110 python3 "$repo/bench/engine/decode_agreement.py" --models falcon-h1-0.5b \
  --length 2048 --attention sdpa-gqa --out "$OUT/agreement-falcon-h1-0.5b-2k-pdl.json" 2>>"$OUT/pdl.err" | tail -8
echo "agreement: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
