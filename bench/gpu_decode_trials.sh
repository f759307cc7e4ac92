#!/usr/bin/env bash
# GPU, in parts (each a fresh process per measurement):
#   trials: the attention trial with decode candidates timed in a CUDA graph against eager calls
#     (bench/engine/attention_trials.py, at the engine's 4096 cached positions), then `ctxscope agent
#     run` of plan bench/engine/plans/gpu-one-row-off.toml (the decode step compiled with the one-row
#     products kept as GEMMs) and of the same plan with the defaults, their records side by side;
#   combo "MODELS": a compiled decode step at 32K with inductor's combo kernels (the engine's default)
#     and without (`--without-combo`), bench/engine/decode_overhead.py;
#   agreement "MODELS": the engine's decode paths' logits against a full recompute at 2K, 6 steps
#     (bench/engine/decode_agreement.py).
# Run from the repository root after the device README's install line (kernel, pydantic and paho-mqtt
# wheels carried); writes under $OUT.
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_decode_trials.sh trials
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_decode_trials.sh combo "falcon-h1-0.5b qwen2.5-0.5b"
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/gpu_decode_trials.sh $1 ${2:+\"$2\"}  # $revision" >>"$OUT/command.txt"
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
if [ "$1" = trials ]; then
  timeout 90 python3 "$repo/bench/engine/attention_trials.py" --length 4096 \
    --out "$OUT/attention-trials-4096.json" 2>>"$OUT/trials.err"
  echo "attention trials at 4096: exit $?"
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
              sorted(dec)[len(dec) // 2] if dec else "-", "|", impl.get("decode_one_row_products"), "|", impl.get("decode_combo_kernels"), "|",
              impl.get("attention_backend_decode"), "|", impl.get("attention_trial_timing_decode"))
PY
  exit 0
fi
for model in ${2:-}; do
  if [ "$1" = agreement ]; then
    started=$SECONDS
    timeout 200 python3 "$repo/bench/engine/decode_agreement.py" --models "$model" --length 2048 \
      --attention sdpa-gqa --out "$OUT/agreement-$model-2k.json" 2>>"$OUT/agreement.err" | tail -8
    echo "$model agreement: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
    continue
  fi
  for variant in with-combo without-combo; do
    started=$SECONDS
    flag=""
    [ "$variant" = without-combo ] && flag=--without-combo
    timeout 280 python3 "$repo/bench/engine/decode_overhead.py" --models "$model" --length 32768 $flag \
      --out "$OUT/$model-32k-$variant.json" 2>>"$OUT/combo.err" | tail -1
    echo "$model $variant: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
  done
done
