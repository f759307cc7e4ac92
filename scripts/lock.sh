#!/usr/bin/env bash
# Refreshes the committed dependency locks in requirements/ from pyproject.toml's ranges.
#
# Run it (`make lock`) after changing a dependency range in pyproject.toml, or to take newer releases on
# purpose; then run `make test` and commit pyproject.toml with requirements/. Every install (Makefile,
# .ci/run, jetson/install.sh, docker/) goes through these files, so a machine set up today resolves
# exactly what CI tested.
#
# One universal resolution (Linux/macOS, x86_64 and aarch64, Python 3.10 to 3.12) with the fewest versions
# per package, so Python 3.10 on a JetPack 6 board gets the same versions as CI's Python. torch, triton
# and the CUDA runtime wheels are left out: torch is the platform's own build (the CPU wheel for tests,
# NVIDIA's build on a board or a GPU host), constrained by pyproject.toml, never replaced by a lock.
set -euo pipefail
cd "$(dirname "$0")/.."

UV=${UV:-uv}
command -v "$UV" >/dev/null || { echo "lock.sh needs uv (pip install uv)" >&2; exit 1; }

NOT_LOCKED=(torch triton cuda-bindings cuda-pathfinder cuda-toolkit nvidia-cublas nvidia-cuda-cupti
  nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
  nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink
  nvidia-nvshmem-cu13 nvidia-nvtx)
no_emit=()
for package in "${NOT_LOCKED[@]}"; do no_emit+=(--no-emit-package "$package"); done

compile() {  # compile OUTPUT EXTRA... : one lock file with hashes for the given extras
  local output=$1; shift
  local extras=()
  for extra in "$@"; do extras+=(--extra "$extra"); done
  "$UV" pip compile pyproject.toml requirements/build.in "${extras[@]}" --universal --python-version 3.10 \
    --fork-strategy fewest --generate-hashes --no-header --no-annotate \
    "${no_emit[@]}" "${constraint[@]}" -o "$output" --quiet
}

# The full set first (tests, demo, collector, agent); the per-role files are cut from the same versions.
constraint=()
compile requirements/dev.txt agent collector postgres dev jetson
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
sed -n 's/^\([A-Za-z0-9_.-]*==[^ ;\\]*\).*/\1/p' requirements/dev.txt >"$pins"
constraint=(--constraint "$pins")
compile requirements/agent.txt agent jetson
compile requirements/collector.txt collector postgres
echo "locked: $(grep -c '==' requirements/dev.txt) packages in requirements/dev.txt," \
  "$(grep -c '==' requirements/agent.txt) in agent.txt, $(grep -c '==' requirements/collector.txt) in collector.txt"
