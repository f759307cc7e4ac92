#!/usr/bin/env bash
# H200: the compiled decode step (torch.compile, captured in a CUDA graph; the engine's default decode
# path on a GPU) against the uncompiled graph, and the fair plan's decode targets on it.
# Run from the repository root after the device README's install line (pydantic, paho-mqtt and
# mamba-ssm wheels carried); about 6 minutes; writes under $OUT (copied to results/engine/compiled/).
#  1. decode_overhead: Qwen2.5-0.5B, Llama-3.2-1B and Falcon-H1-0.5B at 4K: kernels per eager step,
#     graph vs compiled graph ms/token, compiled step against the uncompiled eager step.
#  2. bench/engine/plans/h200-fair.toml (Qwen2.5-0.5B and Llama-3.2-1B at 4K and 64K) through
#     `ctxscope agent run`, sdpa-gqa, decode = auto (compiled).
# Targets: Qwen <= 1.5 ms/token at 4K and <= 2.5 ms/token at 64K; Llama <= 3 ms/token at 64K.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
echo "bash bench/h200_compiled.sh  # $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')" >"$OUT/command.txt"
timeout 200 python3 "$repo/bench/engine/decode_overhead.py" --models qwen2.5-0.5b,llama3.2-1b,falcon-h1-0.5b \
  --length 4096 --out "$OUT/overhead-4k.json" 2>"$OUT/overhead.err" | tee "$OUT/overhead.txt"
timeout 300 ctxscope agent run "$repo/bench/engine/plans/h200-fair.toml" --attention sdpa-gqa \
  --out "$OUT/fair-compiled.jsonl" --no-progress 2>"$OUT/fair.err" | tail -2
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"{'model':14} {'ctx':>6} {'ms/token':>9} {'floor ms':>9} {'fraction':>8}  path")
path = out / "fair-compiled.jsonl"
for line in path.read_text().splitlines() if path.exists() else []:
    res = json.loads(line)
    if res.get("kind") != "result" or "decode_per_token" not in res.get("metrics", {}):
        continue
    m, impl = res["metrics"], res["implementation"]
    med = lambda k: sorted(m[k]["samples"])[len(m[k]["samples"]) // 2] if k in m else float("nan")
    print(f"{res.get('model', '?'):14} {res.get('context_len', 0):>6} {med('decode_per_token'):9.3f} "
          f"{med('decode_floor'):9.3f} {med('decode_floor_fraction'):8.2f}  {impl.get('decode_path', '-')} "
          f"breaks {impl.get('decode_graph_breaks', '-')} {res.get('details', {}).get('decode_note', '')[:200]}")
PY
