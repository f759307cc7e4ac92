#!/usr/bin/env bash
# GPU: the engine's two guards on a real card, before any timed point.
# 1. An agent run killed with SIGKILL while its worker holds the GPU: the worker (and any process it
#    started) must be gone within a few seconds, and the card's memory in use back where it was.
# 2. The idle-power check on an idle GPU: it must accept the card (the timed run that follows records
#    `idle_power`, not `details.idle_power`).
# Run from the repository root after the device README's install line; writes $OUT/guards.json.
#   bash bench/gpu_engine_guards.sh
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
# 32K is at or above the plan's isolate_from: the point runs in a worker process
sed -e 's/^models = .*/models = ["falcon-h1-0.5b"]/' -e 's/^context_lengths = .*/context_lengths = [32768]/' \
  "$repo/bench/engine/plans/h200-curves-fair.toml" >/tmp/plan-guard.toml
used_mib() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
baseline=$(used_mib)
ctxscope agent run /tmp/plan-guard.toml --out /tmp/guard.jsonl --no-progress 2>/tmp/guard.err >/dev/null &
agent=$!
# wait until the run's worker holds GPU memory (the model is loaded); nvidia-smi may not see the
# container's PIDs, so the card's memory in use tells
worker="" loaded_after="" held=""
for ((i = 0; i < 240; i++)); do
  worker=$(pgrep -P "$agent" -f ctxscope.agent.engine.worker | head -1)
  held=$(used_mib)
  if [[ -n $worker ]] && ((held > baseline + 1024)); then loaded_after=$((i / 2)); break; fi
  sleep 0.5
done
kill -9 "$agent"
killed_ns=$(date +%s%N)
gone_after=""
for ((i = 0; i < 40; i++)); do
  # gone: no such process, or a zombie nobody has reaped yet (it holds nothing then)
  state=$(awk '{print $3}' "/proc/$worker/stat" 2>/dev/null)
  if [[ -n $worker && ${state:-Z} == Z ]]; then gone_after=$((($(date +%s%N) - killed_ns) / 1000000)); break; fi
  sleep 0.25
done
sleep 2
after=$(used_mib)
apps="memory used: $baseline MiB before, $held MiB loaded, $after MiB after; workers left: $(pgrep -f ctxscope.agent.engine.worker | tr '\n' ' ')"
python3 - "$OUT/guards.json" "$worker" "$loaded_after" "$gone_after" "$apps" <<'PY'
import json, sys
path, worker, loaded, gone, apps = sys.argv[1:]
report = {
    "check": "agent run SIGKILLed while its worker held the GPU",
    "worker_pid": int(worker) if worker else None,
    "worker_on_gpu_after_s": float(loaded) if loaded else None,
    "worker_gone_after_ms": int(gone) if gone else None,
    "gpu": apps,
    "passed": bool(worker) and bool(loaded) and bool(gone) and apps.endswith("left: "),
}
json.dump(report, open(path, "w"), indent=1)
print(json.dumps(report))
PY
