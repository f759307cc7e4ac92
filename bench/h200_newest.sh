#!/usr/bin/env bash
# H200: kernel-path records against profiler traces, on the image's transformers (5.17, no `kernels`
# package) and on the newest release (5.25 with `kernels`), then one Mamba-2 and one hybrid sweep point
# through the agent on the newest release. Stage first (from the repository root, here):
#   ../shared/device/stage.sh transformers==5.25.0 huggingface-hub==2.4.0 httpx2==2.16.2 \
#     httpcore2==2.16.2 truststore==0.10.5 anyio==4.16.0 idna==3.20 h11==0.16.0 kernels==0.19.1 tomlkit \
#     regex==2026.11.19 click==8.5.1 hf-xet==1.8.0 pydantic==2.14.4 pydantic-core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 paho-mqtt==2.2.0
# and run with .device-wheels carried: bash bench/h200_newest.sh   (writes under $OUT)
set -uo pipefail
repo=$PWD
newest=(transformers huggingface_hub kernels httpx2 httpcore2 hf_xet tomlkit truststore)
install() {  # install TARGET WHEEL...: the wheels and this checkout into TARGET, in one step (a second
  # --target install would keep the first one's bin/ and leave out the ctxscope script)
  local target=$1; shift
  python3 -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target "$target" \
    "$@" "$repo" || exit 1
}
old_wheels=()
for wheel in .device-wheels/*.whl; do
  skip=0
  for name in "${newest[@]}"; do [[ $(basename "$wheel") == "$name"-* ]] && skip=1; done
  [ "$skip" = 0 ] && old_wheels+=("$wheel")
done
install /tmp/site-image "${old_wheels[@]}"
install /tmp/site-newest .device-wheels/*.whl
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >"$OUT/gpu.txt"
cd /tmp || exit 1
for site in image newest; do
  PYTHONPATH=/tmp/site-$site python3 -c \
    "import transformers, importlib.util as u; print('$site: transformers', transformers.__version__, 'kernels package', u.find_spec('kernels') is not None)"
  PYTHONPATH=/tmp/site-$site timeout 200 python3 "$repo/bench/engine/kernel_evidence.py" \
    --models mamba2-780m,falcon-h1-0.5b,zamba2-1.2b,mamba-790m --length 4096 --also-transformers-runtime \
    --out "$OUT/kernel_evidence_$site.json" 2>"$OUT/kernel_evidence_$site.err"
  echo "exit $?"
done
PYTHONPATH=/tmp/site-newest PATH=/tmp/site-newest/bin:$PATH timeout 240 ctxscope agent run \
  "$repo/bench/engine/plans/h200-newest.toml" --out "$OUT/points_newest.jsonl" --no-progress 2>"$OUT/points.err" | tail -3
