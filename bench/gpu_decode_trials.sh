#!/usr/bin/env bash
# GPU: (1) the attention trial with decode candidates timed in a CUDA graph against eager calls
# (bench/engine/attention_trials.py, at the engine's 4096 cached positions and at 32K); (2) a
# `ctxscope agent run` of plan bench/engine/plans/gpu-one-row-off.toml (the decode step compiled
# with the one-row products kept as GEMMs) and of the same plan with the default one-row reductions,
# for their records' paths, trials and decode times side by side; (3) inductor's combo kernels
# (horizontal fusion of independent kernels) on a compiled decode step at 32K, against the default, each
# a fresh process (bench/engine/decode_overhead.py). Run from the repository root after the device
# README's install line (kernel, pydantic and paho-mqtt wheels carried); writes under $OUT.
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_decode_trials.sh trials        # (1) and (2)
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_decode_trials.sh "qwen2.5-0.5b falcon-h1-0.5b"  # (3)
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/gpu_decode_trials.sh \"$1\"  # $revision" >>"$OUT/command.txt"
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
if [ "$1" = trials ]; then
  for length in 4096 32768; do
    timeout 90 python3 "$repo/bench/engine/attention_trials.py" --length "$length" \
      --out "$OUT/attention-trials-$length.json" 2>>"$OUT/trials.err"
    echo "attention trials at $length: exit $?"
  done
  sed -e 's/^one_row_reductions = .*/one_row_reductions = true/' -e 's/^name = .*/name = "gpu-one-row-on"/' \
    "$repo/bench/engine/plans/gpu-one-row-off.toml" >/tmp/gpu-one-row-on.toml
  for plan in "$repo/bench/engine/plans/gpu-one-row-off.toml" /tmp/gpu-one-row-on.toml; do
    name=$(basename "$plan" .toml)
    started=$SECONDS
    timeout 150 ctxscope agent run "$plan" --out "$OUT/$name.jsonl" --no-progress 2>>"$OUT/trials.err" | tail -1
    echo "$name: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
  done
  python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for path in sorted(out.glob("gpu-one-row-*.jsonl")):
    for line in path.read_text().splitlines():
        res = json.loads(line)
        if res.get("kind") != "result":
            continue
        m, impl = res.get("metrics", {}), res.get("implementation", {})
        dec = m.get("decode_per_token", {}).get("samples", [])
        print(path.stem, res.get("outcome"), "decode ms/token median",
              sorted(dec)[len(dec) // 2] if dec else "-", "|", impl.get("decode_one_row_products"), "|",
              impl.get("attention_backend_decode"), "|", impl.get("attention_trial_timing_decode"))
PY
  exit 0
fi
for model in $1; do
  for flags in "" combo_kernels; do
    started=$SECONDS
    timeout 280 python3 "$repo/bench/engine/decode_overhead.py" --models "$model" --length 32768 \
      ${flags:+--inductor "$flags"} --out "$OUT/$model-32k-${flags:-default}.json" 2>>"$OUT/combo.err" | tail -1
    echo "$model ${flags:-default}: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
  done
done
