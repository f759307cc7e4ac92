#!/usr/bin/env bash
# H200, the second call of 2026-12-04 (after bench/h200_fair.sh): under $OUT,
#  1. one Mamba-2 and one hybrid sweep point through the agent on the newest transformers (5.25 with the
#     `kernels` package): their records must name the native kernels (bench/h200_newest.sh checked the
#     same kernel paths against profiler traces);
#  2. `ctxscope agent calibrate` on the image's transformers (bench/h200_calibrate.sh's command);
#  3. the agent-cuda image's steps followed as a script, then one plan with --require-fast-kernels
#     (bench/deploy/h200_agent_cuda_steps.sh).
# Staging: the line in bench/h200_newest.sh's header.
set -uo pipefail
repo=$PWD
newest=(transformers huggingface_hub kernels httpx2 httpcore2 hf_xet tomlkit truststore)
image_wheels=()
for wheel in .device-wheels/*.whl; do
  skip=0
  for name in "${newest[@]}"; do [[ $(basename "$wheel") == "$name"-* ]] && skip=1; done
  [ "$skip" = 0 ] && image_wheels+=("$wheel")
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target /tmp/site-image \
  "${image_wheels[@]}" "$repo" || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target /tmp/site-newest \
  .device-wheels/*.whl "$repo" || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
cd /tmp || exit 1
PYTHONPATH=/tmp/site-newest PATH=/tmp/site-newest/bin:$PATH timeout 170 ctxscope agent run \
  "$repo/bench/engine/plans/h200-newest.toml" --out "$OUT/points_newest.jsonl" --no-progress 2>"$OUT/points.err" | tail -2
PYTHONPATH=/tmp/site-image PATH=/tmp/site-image/bin:$PATH timeout 170 ctxscope agent calibrate --torch-device cuda \
  --budget-s 60 --out "$OUT/calibration.jsonl" 2>"$OUT/calibration.err" | tail -12
cd "$repo" || exit 1
timeout 200 bash bench/deploy/h200_agent_cuda_steps.sh 2>&1 | tail -12
