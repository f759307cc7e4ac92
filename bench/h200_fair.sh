#!/usr/bin/env bash
# H200: the sdpa-gqa attention path (SDPA with native GQA on a calibrated backend) against a full
# recompute, and Transformer decode against its bandwidth floor, before (transformers-sdpa) and after.
# Run from the repository root after the device README's install line; at most ~8 minutes; writes
# under $OUT, and the lead copies $OUT/* to results/engine/fair/.
#  1. decode_agreement: Qwen2.5-0.5B and Zamba2-1.2B at 4K, both attention paths, every decode path
#     (max |logit difference| and argmax agreement against an eager-attention full recompute).
#  2. bench/engine/plans/h200-fair.toml (Qwen2.5-0.5B and Llama-3.2-1B at 4K and 64K) on sdpa-gqa,
#     then on transformers-sdpa: decode ms/token, bytes read per token, floor and fraction of it.
# Targets: Qwen <= 1.5 ms/token at 4K and <= 2.5 ms/token at 64K; Llama <= 3 ms/token at 64K.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
echo "bash bench/h200_fair.sh  # $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')" >"$OUT/command.txt"
timeout 120 python3 "$repo/bench/engine/decode_agreement.py" --models qwen2.5-0.5b,zamba2-1.2b --length 4096 \
  --attention sdpa-gqa,transformers-sdpa --out "$OUT/agreement-4k.json" 2>"$OUT/agreement.err" | tee "$OUT/agreement.txt"
for attention in sdpa-gqa transformers-sdpa; do
  timeout 210 ctxscope agent run "$repo/bench/engine/plans/h200-fair.toml" --attention "$attention" \
    --out "$OUT/fair-$attention.jsonl" --no-progress 2>>"$OUT/fair.err" | tail -2
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"{'attention':18} {'model':14} {'ctx':>6} {'ms/token':>9} {'floor ms':>9} {'fraction':>8}  backend")
for attention in ("sdpa-gqa", "transformers-sdpa"):
    path = out / f"fair-{attention}.jsonl"
    if not path.exists():
        continue
    for line in path.read_text().splitlines():
        res = json.loads(line)
        if res.get("kind") != "result" or "decode_per_token" not in res.get("metrics", {}):
            continue
        m, impl = res["metrics"], res["implementation"]
        med = lambda k: sorted(m[k]["samples"])[len(m[k]["samples"]) // 2] if k in m else float("nan")
        print(f"{attention:18} {res.get('model', '?'):14} {res.get('context_len', 0):>6} "
              f"{med('decode_per_token'):9.3f} {med('decode_floor'):9.3f} {med('decode_floor_fraction'):8.2f}  "
              f"{impl.get('attention_backend_decode', impl.get('attention', '-'))} "
              f"{impl.get('decode_path', '-')} cudnn {impl.get('cudnn_version', '-')}")
PY
