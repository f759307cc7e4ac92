#!/usr/bin/env bash
# H200: the study's max-context table like for like (issue: "the study's tables like for like").
# Study mode (all-position logits, bf16, transformers' own attention path), the cap set to an RTX 4090's
# total device memory (24,563 MiB as torch reports it) counted over the probe process's whole device
# memory, CUDA context and libraries included (agent/engine/devicemem.py). Then one uncapped probe per
# model at the study's own max length: the memory breakdown at equal length. Run from the repository
# root after the device README's install line; writes under $OUT (copied to results/engine/study-4090/).
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
repo=$PWD
cd /tmp || exit 1
echo "bash bench/h200_study_4090.sh  # $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')" >>"$OUT/command.txt"
# model  start  upper-guess  study-length  seconds: brackets from the allocator-only searches (75776,
# 73216, 156672, 93184 tokens), which the counted context can only lower
for job in "qwen2.5-0.5b 65536 76288 57344 90" "llama3.2-1b 65536 73728 65536 90" \
           "falcon-h1-0.5b 131072 157696 163840 100" "zamba2-1.2b 81920 93696 49152 100"; do
  read -r -a job_fields <<<"$job"; set -- "${job_fields[@]}"
  started=$SECONDS
  timeout "$5" ctxscope agent maxctx "$1" --logits all --precision bf16 --memory-cap 24563MiB \
    --start "$2" --upper-guess "$3" --max-tokens 262144 --tolerance 0.01 --probe-timeout 60 \
    --out "$OUT/study-$1.json" 2>>"$OUT/study.err" | tail -1
  echo "$1: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
  timeout 30 ctxscope agent maxctx "$1" --logits all --precision bf16 --start "$4" --max-tokens "$4" \
    --probe-timeout 28 --out "$OUT/equal-$1.json" 2>>"$OUT/study.err" | tail -1
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"{'model':15} {'length':>7} {'outcome':8} {'peak GiB':>8} {'weights':>7} {'cache':>7} {'logits':>7} {'outside':>7}")
for path in sorted(out.glob("*.json")):
    rec = json.loads(path.read_text())
    for p in rec.get("probes", []):
        m = p.get("memory", {})
        gib = lambda k: f"{m[k] / 2**30:7.2f}" if k in m else "      -"
        peak = f"{p['peak_bytes'] / 2**30:8.2f}" if p.get("peak_bytes") else "       -"
        print(f"{path.stem:22} {p['context_len']:>7} {p['outcome']:8} {peak} {gib('weights_bytes')} "
              f"{gib('cache_bytes')} {gib('logits_bytes')} {gib('outside_allocator_bytes')}")
PY
# the device returns at most 8 files: one archive
cd "$OUT" && tar czf study-4090.tgz ./*.json study.err command.txt && rm -f ./*.json study.err
