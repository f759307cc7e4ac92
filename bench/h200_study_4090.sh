#!/usr/bin/env bash
# H200: the study's max-context table like for like (issue: "the study's tables like for like").
# Study mode (all-position logits, bf16, transformers' own attention path), the cap set to an RTX 4090's
# total device memory (24,563 MiB as torch reports it) counted over the probe process's whole device
# memory, CUDA context and libraries included (agent/engine/devicemem.py). Then one uncapped probe per
# model at the study's own max length: the memory breakdown at equal length. Run from the repository
# root after the device README's install line; writes under $OUT (copied to results/engine/study-4090/).
# The revision in command.txt is $CTXSCOPE_GIT_REVISION where set (the device's copy of the tree may
# carry older git metadata), else the checkout's HEAD.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
# mamba_ssm's Triton kernels autotune in every fresh process; keep the choices on disk between probes
export TRITON_CACHE_AUTOTUNING=1
# seconds one probe may take (a hybrid's first probe in a fresh process autotunes mamba_ssm's kernels)
probe=${PROBE_TIMEOUT:-90}
repo=$PWD
cd /tmp || exit 1
echo "${PROBE_TIMEOUT:+PROBE_TIMEOUT=$PROBE_TIMEOUT }bash bench/h200_study_4090.sh ${1:+\"$1\"}  # ${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}" >>"$OUT/command.txt"
# (The committed results/engine/study-4090/*.json were written by the CLI's earlier one-document --out;
# it now writes the run's records as JSON lines, which this summary reads.)
# Jobs "model:start:upper-guess:study-length:seconds" (default below); start 0 skips the search,
# study-length 0 the equal-length probe. The default brackets come from the allocator-only searches
# (75776, 73216, 156672, 93184 tokens), which counting the context can only lower.
jobs=${1:-"qwen2.5-0.5b:65536:76288:57344:90 llama3.2-1b:65536:73728:65536:90 falcon-h1-0.5b:131072:157696:163840:100 zamba2-1.2b:81920:93696:49152:100"}
for job in $jobs; do
  IFS=: read -r model start upper equal limit <<<"$job"
  started=$SECONDS
  if [ "$start" != 0 ]; then
    timeout "$limit" ctxscope agent maxctx "$model" --logits all --precision bf16 --memory-cap 24563MiB \
      --start "$start" --upper-guess "$upper" --max-tokens 262144 --tolerance 0.01 --probe-timeout "$probe" \
      --out "$OUT/study-$model-$start.jsonl" 2>>"$OUT/study.err" | tail -1
    echo "$model: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
  fi
  if [ "$equal" != 0 ]; then
    timeout $((probe + 10)) ctxscope agent maxctx "$model" --logits all --precision bf16 --start "$equal" \
      --max-tokens "$equal" --probe-timeout "$probe" --out "$OUT/equal-$model.jsonl" 2>>"$OUT/study.err" | tail -1
  fi
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"{'model':15} {'length':>7} {'outcome':8} {'peak GiB':>8} {'weights':>7} {'cache':>7} {'logits':>7} {'outside':>7}")
for path in sorted(out.glob("*.jsonl")):
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") != "result" or rec.get("details", {}).get("kind") != "max_context":
            continue
        for p in rec["details"]["search"]["probes"]:
            m = p.get("memory", {})
            gib = lambda k: f"{m[k] / 2**30:7.2f}" if k in m else "      -"
            peak = f"{p['peak_bytes'] / 2**30:8.2f}" if p.get("peak_bytes") else "       -"
            print(f"{path.stem:22} {p['context_len']:>7} {p['outcome']:8} {peak} {gib('weights_bytes')} "
                  f"{gib('cache_bytes')} {gib('logits_bytes')} {gib('outside_allocator_bytes')}")
PY
# the device returns at most 8 files: one archive
cd "$OUT" && tar czf study-4090.tgz ./*.jsonl study.err command.txt && rm -f ./*.jsonl study.err
