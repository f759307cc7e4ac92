#!/usr/bin/env bash
# GPU: the engine's two guards on a real card, before any timed point.
# 1. An agent run killed with SIGKILL while its worker holds the GPU: the worker (and any process it
#    started) must be gone within a few seconds, and the GPU must hold no compute process of ours.
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
ctxscope agent run /tmp/plan-guard.toml --out /tmp/guard.jsonl --no-progress 2>/tmp/guard.err >/dev/null &
agent=$!
# wait until a worker of this run holds GPU memory (the model is loaded)
worker="" loaded_after=""
for ((i = 0; i < 240; i++)); do
  worker=$(pgrep -f ctxscope.agent.engine.worker | head -1)
  if [[ -n $worker ]] && nvidia-smi --query-compute-apps=pid --format=csv,noheader | grep -qw "$worker"; then
    loaded_after=$((i / 2)); break
  fi
  sleep 0.5
done
kill -9 "$agent"
killed_ns=$(date +%s%N)
gone_after=""
for ((i = 0; i < 40; i++)); do
  if [[ -z $(pgrep -f ctxscope.agent.engine.worker) ]]; then gone_after=$((($(date +%s%N) - killed_ns) / 1000000)); break; fi
  sleep 0.25
done
sleep 1
apps=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | tr '\n' ';')
python3 - "$OUT/guards.json" "$worker" "$loaded_after" "$gone_after" "$apps" <<'PY'
import json, sys
path, worker, loaded, gone, apps = sys.argv[1:]
report = {
    "check": "agent run SIGKILLed while its worker held the GPU",
    "worker_pid": int(worker) if worker else None,
    "worker_on_gpu_after_s": float(loaded) if loaded else None,
    "worker_gone_after_ms": int(gone) if gone else None,
    "gpu_compute_apps_after": apps,
    "passed": bool(worker) and bool(gone) and not apps.strip(";"),
}
json.dump(report, open(path, "w"), indent=1)
print(json.dumps(report))
PY
