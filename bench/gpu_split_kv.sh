#!/usr/bin/env bash
# GPU: the split-KV Triton decode attention (agent/engine/splitkv.py), in parts (each measurement a fresh
# process):
#   kernel: its GPU tests (tests/agent/engine/test_splitkv.py), then the kernel against cuDNN's SDPA at
#     three models' attention shapes, 4K and 32K cached positions (bench/engine/split_kv_decode.py);
#   step: Falcon-H1-0.5B's compiled decode step at 32K with the kernel left out of the attention trial
#     (`--without-split-kv`) and with it (the engine's default), bench/engine/decode_overhead.py;
#   agreement: its decode paths' logits against a full recompute at 2K, 6 steps
#     (bench/engine/decode_agreement.py --attention sdpa-gqa).
# Run from the repository root after the device README's install line (kernel, pydantic, paho-mqtt and
# pytest wheels carried); writes under $OUT (copied to results/engine/decode-tuning/<card>/split-kv/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_split_kv.sh "kernel step"
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/gpu_split_kv.sh agreement
set -uo pipefail
export PATH=/tmp/site/bin:$PATH OUT TRITON_CACHE_AUTOTUNING=1
repo=$PWD
revision=${CTXSCOPE_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo 'revision unknown')}
echo "bash bench/gpu_split_kv.sh \"$1\"  # $revision" >>"$OUT/command.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$OUT/gpu.txt"
for part in $1; do
  started=$SECONDS
  case $part in
  kernel)
    cd "$OUT" || exit 1  # outputs named relative to it, so that no machine path is recorded
    # from outside the checkout: its top-level ctxscope/ would hide the installed package's engine
    timeout 100 python3 -m pytest --rootdir "$repo" --noconftest -p no:cacheprovider -o addopts= -q -rs \
      --import-mode=importlib "$repo/tests/agent/engine/test_splitkv.py" 2>&1 | tail -12 >tests.txt
    cat tests.txt
    timeout 80 python3 "$repo/bench/engine/split_kv_decode.py" --lengths 4096,32768 --out split-kv-decode.json \
      2>>kernel.err
    ;;
  step)
    cd "$OUT" || exit 1
    for variant in without-split-kv with-split-kv; do
      flag=""
      [ "$variant" = without-split-kv ] && flag=--without-split-kv
      timeout 220 python3 "$repo/bench/engine/decode_overhead.py" --models falcon-h1-0.5b --length 32768 $flag \
        --out "falcon-h1-0.5b-32k-$variant.json" 2>>step.err | tail -1
      echo "falcon-h1-0.5b $variant: exit ${PIPESTATUS[0]}"
    done
    ;;
  agreement)
    cd "$OUT" || exit 1
    timeout 240 python3 "$repo/bench/engine/decode_agreement.py" --models falcon-h1-0.5b --length 2048 \
      --attention sdpa-gqa --out agreement-falcon-h1-0.5b-2k.json 2>>agreement.err | tail -8
    ;;
  esac
  echo "$part: after $((SECONDS - started)) s"
  cd "$repo" || exit 1
done
