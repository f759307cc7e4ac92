#!/usr/bin/env bash
# H200: the six study models' curves on the fair path (plan bench/engine/plans/h200-curves-fair.toml),
# one `ctxscope agent run` per model so that each has its own time limit. Run from the repository root
# after the device README's install line (kernel, pydantic and paho-mqtt wheels carried); writes under
# $OUT (copied to results/engine/curves-fair/).
#   bash bench/h200_curves_fair.sh "qwen2.5-0.5b:110 llama3.2-1b:100"     # model:seconds ...
#   bash bench/h200_curves_fair.sh "qwen2.5-0.5b@4096,65536:150"          # model@lengths:seconds
# LENGTHS="4096 32768" cuts every model's lengths; model@... cuts one model's. SPREAD=3 measures each point
# at or below 16K tokens in that many fresh processes (the plan's spread_processes; 1 by default, to fit
# the device's calls). Each model's records and
# stderr come back as one archive, curves-<model>.tgz (the device returns at most eight files).
# CTXSCOPE_GIT_REVISION must be set (the device's copy of the tree may carry older git metadata): the
# installed package must be stamped with it, and command.txt names it.
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT
# mamba_ssm's Triton kernels autotune in every fresh process; keep the choices on disk between them
export TRITON_CACHE_AUTOTUNING=1
repo=$PWD
cd /tmp || exit 1
# The records name the revision the installed package was stamped with at build time: install with
# CTXSCOPE_GIT_REVISION already set, or they name the device copy's git metadata, which may be older.
if [ -z "${CTXSCOPE_GIT_REVISION:-}" ]; then
  echo "set CTXSCOPE_GIT_REVISION to the commit of this tree before installing the package and running this" >&2
  exit 2
fi
stamped=$(python3 -c 'from ctxscope.agent.engine.manifest import build_revision as b; print(b().get("git_revision", ""))')
if [ "$stamped" != "$CTXSCOPE_GIT_REVISION" ]; then
  echo "the installed package is stamped ${stamped:-with no revision}, not $CTXSCOPE_GIT_REVISION: reinstall it with CTXSCOPE_GIT_REVISION set" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
echo "${LENGTHS:+LENGTHS=\"$LENGTHS\" }${SPREAD:+SPREAD=$SPREAD }bash bench/h200_curves_fair.sh \"$1\"  # $CTXSCOPE_GIT_REVISION" >>"$OUT/command.txt"
for entry in $1; do
  model=${entry%%:*} limit=${entry##*:} lengths=${LENGTHS:-}
  if [[ $model == *@* ]]; then lengths=${model#*@} lengths=${lengths//,/ } model=${model%%@*}; fi
  sed -e "s/^models = .*/models = [\"$model\"]/" \
    ${lengths:+-e "s/^context_lengths = .*/context_lengths = [${lengths// /, }]/"} \
    ${SPREAD:+-e "s/^spread_processes = .*/spread_processes = $SPREAD/"} \
    "$repo/bench/engine/plans/h200-curves-fair.toml" >"/tmp/plan-$model.toml"
  started=$SECONDS
  timeout "$limit" ctxscope agent run "/tmp/plan-$model.toml" --out "$OUT/curves-$model.jsonl" --no-progress \
    2>"$OUT/curves-$model.err" | tail -1
  echo "$model: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s (limit $limit s)"
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
med = lambda m, k: sorted(m[k]["samples"])[len(m[k]["samples"]) // 2] if k in m else float("nan")
print(f"{'model':15} {'ctx':>7} {'TTFT ms':>9} {'ms/token':>9} {'floor':>7} {'x floor':>7} {'idle W':>14}  decode path / breaks")
for path in sorted(out.glob("curves-*.jsonl")):
    for line in path.read_text().splitlines():
        res = json.loads(line)
        if res.get("kind") != "result" or res.get("details", {}).get("kind") == "profile":
            continue
        m, impl = res.get("metrics", {}), res.get("implementation", {})
        if res.get("outcome") != "ok":
            print(f"{res.get('model', '?'):15} {res.get('context_len', 0):>7} {res.get('outcome')}")
            continue
        ttft, dec, floor = med(m, "ttft"), med(m, "decode_per_token"), med(m, "decode_floor")
        idle = f"{med(m, 'idle_power'):.1f}" if "idle_power" in m else str(res.get("details", {}).get("idle_power", "-"))[:14]
        print(f"{res.get('model', '?'):15} {res.get('context_len', 0):>7} {ttft:9.1f} {dec:9.3f} {floor:7.3f} "
              f"{dec / floor if floor == floor and floor else float('nan'):7.2f} {idle:>14}  {impl.get('decode_path', '-')} "
              f"{impl.get('decode_graph_breaks', '-')} {str(res.get('details', {}).get('decode_note', ''))[:120]}")
PY
# the device returns at most 8 files: one archive per model
cd "$OUT" || exit 1
for records in curves-*.jsonl; do
  name=${records%.jsonl}
  files=("./$records")
  [[ -f $name.err ]] && files+=("./$name.err")
  tar czf "$name.tgz" "${files[@]}" && rm -f "${files[@]}"
done
