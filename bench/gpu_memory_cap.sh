#!/usr/bin/env bash
# GPU: a plan with a memory cap through `ctxscope agent run` (bench/engine/plans/gpu-memory-cap.toml): the
# capped point and the max-context search under the cap; then a plan whose cap is below the bound is
# refused before anything runs. Run from the repository root after the device README's install line;
# writes under $OUT (copied to results/engine/memory-cap/).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
echo "bash bench/gpu_memory_cap.sh  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$OUT/gpu.txt"
started=$SECONDS
timeout "${LIMIT:-240}" ctxscope agent run "$repo/bench/engine/plans/gpu-memory-cap.toml" \
  --out "$OUT/memory-cap.jsonl" --no-progress 2>"$OUT/memory-cap.err" | tail -12
echo "capped plan: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
sed -e 's/^memory_cap = .*/memory_cap = "1KiB"/' "$repo/bench/engine/plans/gpu-memory-cap.toml" >/tmp/tiny-cap.toml
ctxscope agent run /tmp/tiny-cap.toml --out "$OUT/tiny-cap.jsonl" --no-progress >"$OUT/tiny-cap.txt" 2>&1
echo "cap below the bound: exit $? ($(tail -1 "$OUT/tiny-cap.txt"))"
python3 - "$OUT/memory-cap.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    rec = json.loads(line)
    search = rec.get("details", {}).get("search") if rec.get("kind") == "result" else None
    for probe in (search or {}).get("probes", []):
        peak = probe.get("peak_bytes")
        print(f"probe {probe['context_len']:>7} {probe['outcome']:8} peak {peak / 2**30 if peak else float('nan'):6.2f} GiB")
PY
