#!/usr/bin/env bash
# GPU (Hopper): the engine's compiled decode step with programmatic dependent launch, its default since
# bench/gpu_pdl.sh measured it. First Falcon-H1-0.5B at 64K through `ctxscope agent run` (the curves
# plan, bench/h200_curves_fair.sh: the point the earlier call's limit cut), then its step at 16K
# without and with the launch, each a fresh process, on the same machine (bench/engine/decode_overhead.py,
# 40 costliest kernels profiled).
# Run from the repository root after the device README's install line, with CTXSCOPE_GIT_REVISION set
# before installing; writes under $OUT.
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_pdl_engine.sh
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
bash bench/h200_curves_fair.sh "falcon-h1-0.5b@65536:230" || exit $?
echo "bash bench/gpu_pdl_engine.sh  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
cd /tmp || exit 1
overhead() {  # tag, limit (s), extra arguments
  local tag=$1 limit=$2 started=$SECONDS
  shift 2
  timeout "$limit" python3 "$repo/bench/engine/decode_overhead.py" --models falcon-h1-0.5b --length 16384 \
    --top 40 --out "$OUT/falcon-h1-0.5b-16k-$tag.json" "$@" 2>>"$OUT/pdl-engine.err" | tail -1
  echo "falcon-h1-0.5b $tag: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
}
overhead without-pdl 140 --without-pdl
overhead engine-default 120
