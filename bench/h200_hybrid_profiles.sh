#!/usr/bin/env bash
# H200: `ctxscope agent profile` on every hybrid of the zoo, prefill and decode, one process per model
# so that each has its own time limit. Run from the repository root after the device README's install
# line (kernel, pydantic and paho-mqtt wheels carried); writes one archive under $OUT (copied to
# results/profiling/hybrids/).
#   bash bench/h200_hybrid_profiles.sh "bamba-9b:70 nemotron-h-8b:70"      # model:seconds ...
#   LENGTHS=32k TAG=hybrid-profiles-32k bash bench/h200_hybrid_profiles.sh "zamba2-2.7b:80"
#   PHASES=decode DECODE_PATH=auto LENGTHS=32k TAG=compiled bash bench/h200_hybrid_profiles.sh "falcon-h1-0.5b:150"
# The revision in command.txt is $CTXSCOPE_GIT_REVISION where set (the device's copy of the tree may
# carry older git metadata), else the checkout's HEAD.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
# mamba_ssm's Triton kernels autotune in every fresh process; keep the choices on disk between them
export TRITON_CACHE_AUTOTUNING=1
repo=$PWD
LENGTHS=${LENGTHS:-4k,32k} TAG=${TAG:-hybrid-profiles} PHASES=${PHASES:-prefill decode} DECODE_PATH=${DECODE_PATH:-eager}
phase_options=()
for phase in $PHASES; do phase_options+=(--phase "$phase"); done
cd /tmp || exit 1
mkdir -p "$OUT/profiles"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
echo "PHASES=\"$PHASES\" DECODE_PATH=$DECODE_PATH LENGTHS=$LENGTHS TAG=$TAG bash bench/h200_hybrid_profiles.sh \"$1\"  # ${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}" >>"$OUT/command.txt"
for entry in $1; do
  model=${entry%%:*} limit=${entry##*:}
  started=$SECONDS
  timeout "$limit" ctxscope agent profile "$model" --lengths "$LENGTHS" "${phase_options[@]}" \
    --decode-path "$DECODE_PATH" --iterations 2 --torch-device cuda --out "$OUT/profiles/profile-$model.jsonl" \
    >"$OUT/profiles/profile-$model.log" 2>&1
  echo "$model: exit $? after $((SECONDS - started)) s (limit $limit s)"
done
python3 - "$OUT/profiles" <<'PY'
import json, sys, pathlib
for path in sorted(pathlib.Path(sys.argv[1]).glob("profile-*.jsonl")):
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") != "result":
            continue
        impl = rec.get("implementation", {})
        path_note = f"scan={impl.get('ssm_scan', '-')} conv={impl.get('conv1d', '-')} attn={impl.get('attention_backend_prefill', '-')}"
        if rec.get("outcome") != "ok":
            print(f"{rec.get('model')} {rec.get('context_len')}: {rec.get('outcome')} {str(rec.get('error'))[:160]}")
            continue
        for phase, ops in rec["details"]["operators"].items():
            top = sorted(ops["classes"].items(), key=lambda kv: -kv[1]["time_ms"])[:4]
            shares = ", ".join(f"{name} {c['share_pct']:.1f}%" for name, c in top)
            print(f"{rec['model']:20} {rec['context_len']:>6} {phase:8} {ops['total_ms']:9.3f} ms  {shares}")
        print(f"{'':20} {path_note}")
PY
cd "$OUT" && tar czf "$TAG.tgz" ./profiles && rm -rf ./profiles
