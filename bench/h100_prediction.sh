#!/usr/bin/env bash
# H100: a device the predictor has not seen. First its calibration (`ctxscope agent calibrate`, the
# rates prediction reads), then its measured TTFT and decode for the models and lengths of the H200
# profiles (plan bench/engine/plans/h100-prediction.toml), to check predictions made from the H200's
# profiles and both calibrations. Run from the repository root after the device README's install line;
# writes under $OUT (copied to results/prediction/h100/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/h100_prediction.sh
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
cd /tmp || exit 1
echo "bash bench/h100_prediction.sh  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu \
  --format=csv >"$OUT/gpu.txt"
started=$SECONDS
timeout 220 ctxscope agent calibrate --torch-device cuda --budget-s 60 --out "$OUT/calibration.jsonl" \
  2>"$OUT/calibration.err" | tee "$OUT/calibration.txt"
echo "calibrate: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
started=$SECONDS
timeout 340 ctxscope agent run "$repo/bench/engine/plans/h100-prediction.toml" --out "$OUT/curves.jsonl" \
  --no-progress 2>"$OUT/curves.err" | tail -1
echo "curves: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
python3 - "$OUT/curves.jsonl" <<'PY'
import json, sys
med = lambda m, k: sorted(m[k]["samples"])[len(m[k]["samples"]) // 2] if k in m else float("nan")
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("kind") == "result":
        m = r.get("metrics", {})
        print(f"{r['model']:15} {r['context_len']:>7} {r.get('outcome'):8} TTFT {med(m, 'ttft'):9.2f} ms"
              f"  decode {med(m, 'decode_per_token'):7.3f} ms/token")
PY
gzip -f "$OUT/curves.jsonl"
