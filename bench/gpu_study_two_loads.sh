#!/usr/bin/env bash
# GPU: Zamba2-1.2B's study-mode memory at the study's 49,152 tokens under transformers 4.57.3 (the
# version the study ran it with), once as the earlier probe (one load, one forward) and once following
# the study's memory code further (`--two-loads`: a first load and forward with use_cache=False,
# deleted, then the probe on a second load in the same process), each with the tokenizer's all-ones
# mask, one fresh process each (bench/engine/study_memory.py). Wheels as in bench/h200_study_versions.sh
# (its header stages them); run from the repository root after the device README's install line:
#   bash bench/gpu_study_two_loads.sh .device-wheels/tf457
set -uo pipefail
export OUT PYTHONUNBUFFERED=1
repo=$PWD
echo "bash bench/gpu_study_two_loads.sh $*  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tf457 "$1"/*.whl || exit 1
for variant in one-load two-loads; do
  flag=""
  [ "$variant" = two-loads ] && flag=--two-loads
  started=$SECONDS
  PYTHONPATH="/tmp/tf457:/tmp/site" timeout 200 python3 "$repo/bench/engine/study_memory.py" \
    --model zamba2-1.2b --length 49152 --mask tokenizer $flag \
    --out "$OUT/study-memory-zamba2-1.2b-$variant.json" 2>>"$OUT/study-memory.err" | tail -1
  echo "$variant: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
done
