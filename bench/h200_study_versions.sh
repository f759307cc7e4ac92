#!/usr/bin/env bash
# H200: the study's prefill memory under the transformers versions the study ran (4.52.3 for Qwen and
# Llama, 4.57.3 for Falcon-H1 and Zamba2), at the study's own max length, with the tokenizer's all-ones
# attention mask and without it (bench/engine/study_memory.py). Each version is installed on a path of
# its own from wheels staged in two folders beside the kernel wheels (about 31 MB; the kernel wheels,
# which the study's hybrids ran with, come from the device README's install line into /tmp/site):
#   ../shared/device/stage.sh pydantic pydantic-core annotated-types typing-inspection paho-mqtt
#   get() { d=$1; shift; python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d ".device-wheels/$d" "$@" requests urllib3 idna certifi charset-normalizer; }
#   get tf452 transformers==4.52.3 huggingface-hub==0.33.0 tokenizers==0.21.1
#   get tf457 transformers==4.57.3 huggingface-hub==0.36.0 tokenizers==0.22.1
# Run from the repository root; writes under $OUT (copied to results/engine/study-4090/versions/).
#   bash bench/h200_study_versions.sh .device-wheels/tf452 .device-wheels/tf457
set -uo pipefail
export OUT PYTHONUNBUFFERED=1
repo=$PWD
echo "bash bench/h200_study_versions.sh $*  # ${CTXSCOPE_GIT_REVISION:-revision unknown}" >>"$OUT/command.txt"
install() {  # wheels folder -> target
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$2" "$1"/*.whl
}
install "$1" /tmp/tf452 && install "$2" /tmp/tf457 || exit 1
# the mamba_ssm and causal_conv1d kernels (the study's hybrids ran with them) from the device README's /tmp/site
run() {  # path model length seconds
  PYTHONPATH="$1:/tmp/site" timeout "$4" python3 "$repo/bench/engine/study_memory.py" --model "$2" \
    --length "$3" --out "$OUT/study-memory-$2.json" 2>>"$OUT/study-memory.err" | tail -2
}
run /tmp/tf452 qwen2.5-0.5b 57344 90
run /tmp/tf452 llama3.2-1b 65536 90
run /tmp/tf457 zamba2-1.2b 49152 120
run /tmp/tf457 falcon-h1-0.5b 163840 150
