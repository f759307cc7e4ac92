#!/usr/bin/env bash
# H200 call 1: shake-out smoke and the two benchmarks. Run from the repository root on the device with
# the project installed into /tmp/site (see results/engine/README.md); writes under $OUT.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
python3 bench/engine/prefill_vs_native.py --length 262144 --hf --out "$OUT/prefill_vs_native.json" 2>&1 | tail -3
python3 bench/engine/decode_paths.py --models qwen2.5-0.5b,mamba2-780m --length 4096 --out "$OUT/decode_paths.json" 2>&1 | grep -v Warning | tail -6
ctxscope agent run bench/engine/plans/h200-smoke.toml --out "$OUT/smoke.jsonl" --no-progress 2>"$OUT/smoke.err" | tail -20
tail -5 "$OUT/smoke.err"
ctxscope agent maxctx mamba2-780m --memory-cap 24GiB --logits all --precision fp16 --start 131072 --tolerance 0.05 \
  --probe-timeout 120 --out "$OUT/maxctx_probe.json" 2>&1 | tail -12
