#!/usr/bin/env bash
# H200: the target calibration that prediction reads (`ctxscope agent calibrate`), as a source device's
# own figures. Run from the repository root with .device-wheels carried, after the device README's
# install line, e.g.
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target /tmp/site \
#     .device-wheels/*.whl . && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && bash bench/h200_calibrate.sh
# Repetitions take at most 60 s; a fresh machine adds Triton's autotuning of the SSD scan on top
# (up to about a minute). Writes $OUT/calibration.jsonl (run start with the operating point, one
# result per figure, run end), $OUT/calibration.txt (the printed table) and $OUT/gpu.txt. Feed the
# JSON lines to
#   python bench/prediction/evaluate.py --source-calibration calibration.jsonl
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu \
  --format=csv >"$OUT/gpu.txt"
timeout 240 ctxscope agent calibrate --torch-device cuda --budget-s 60 --out "$OUT/calibration.jsonl" \
  2>"$OUT/calibration.err" | tee "$OUT/calibration.txt"
