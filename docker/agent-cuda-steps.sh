#!/usr/bin/env bash
# The steps of docker/agent-cuda.Dockerfile as a script, for a host without a container engine: the
# host's own CUDA torch plays the base image's. Run from the repository root:
#
#   VENV=/opt/ctxscope/venv bash docker/agent-cuda-steps.sh
#
# Steps, as in the Dockerfile:
#   1. kernels: mamba-ssm and causal-conv1d wheels built against the torch in place (no build
#      isolation, so pip cannot swap torch), or taken prebuilt from KERNEL_WHEELS=DIR;
#   2. a venv with --system-site-packages over that torch; everything else from the hashed lock with
#      --no-deps; then the kernels and the project, --no-deps;
#   3. checks: torch unchanged and >= 2.6 with CUDA, the kernels import, the GPU is usable.
# WHEELS=DIR adds a local wheel directory; OFFLINE=1 uses it alone (no index). LOCK_PACKAGES="a b"
# installs only those packages of the lock (a host that already has the rest, e.g. transformers).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$repo/.agent-cuda-venv}
LOCK=${LOCK:-$repo/requirements/agent.txt}
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(sed -n 's/^ARG TORCH_CUDA_ARCH_LIST="\(.*\)"/\1/p' \
  "$repo/docker/agent-cuda.Dockerfile")}
MAMBA_SSM_VERSION=$(sed -n 's/^ARG MAMBA_SSM_VERSION=//p' "$repo/docker/agent-cuda.Dockerfile")
CAUSAL_CONV1D_VERSION=$(sed -n 's/^ARG CAUSAL_CONV1D_VERSION=//p' "$repo/docker/agent-cuda.Dockerfile")
EINOPS_VERSION=$(sed -n 's/^ARG EINOPS_VERSION=//p' "$repo/docker/agent-cuda.Dockerfile")
export TORCH_CUDA_ARCH_LIST MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE

pip_args=(--quiet --disable-pip-version-check)
[ -z "${WHEELS:-}" ] || pip_args+=(--find-links "$WHEELS")
[ "${OFFLINE:-0}" != 1 ] || pip_args+=(--no-index)

torch_identity() {
  "$1" -c 'import torch; print(torch.__version__, torch.version.cuda)'
}

echo "== 0. torch in place"
before=$(torch_identity "$PYTHON")
echo "$before"
"$PYTHON" -c 'import sys, torch
v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(None if v >= (2, 6) and torch.version.cuda else f"need a CUDA torch >= 2.6, found {torch.__version__}")'

echo "== 1. kernels"
kernels=$(mktemp -d)
trap 'rm -rf "$kernels"' EXIT
if [ -n "${KERNEL_WHEELS:-}" ]; then
  cp "$KERNEL_WHEELS"/mamba_ssm-*.whl "$KERNEL_WHEELS"/causal_conv1d-*.whl "$kernels"/
  echo "prebuilt: $(cd "$kernels" && ls)"
else
  "$PYTHON" -m pip wheel "${pip_args[@]}" --no-deps --no-build-isolation --wheel-dir "$kernels" \
    "causal-conv1d==$CAUSAL_CONV1D_VERSION" "mamba-ssm==$MAMBA_SSM_VERSION"
fi
# `import mamba_ssm` imports einops, and the kernels are installed with --no-deps: it comes with them
"$PYTHON" -m pip wheel "${pip_args[@]}" --no-deps --wheel-dir "$kernels" "einops==$EINOPS_VERSION"

echo "== 2. venv, lock, kernels, project"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
# In the image torch is in the system site-packages, which --system-site-packages shows. A host whose
# torch lives in a virtual environment of its own (as on some GPU servers) is not seen that way: make
# that torch's folder visible to the new venv, which is what the image's base layer provides.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  torch_site=$("$PYTHON" -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
  echo "$torch_site" >"$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/host-torch.pth"
fi
lock=$LOCK
if [ -n "${LOCK_PACKAGES:-}" ]; then
  lock=$kernels/lock-subset.txt
  "$PYTHON" - "$LOCK" "$lock" "$LOCK_PACKAGES" <<'PY'
import re
import sys

source, target = sys.argv[1], sys.argv[2]
# setuptools always: scripts/install-lock.sh builds source-only packages with the lock's own
wanted = {re.sub(r"[-_.]+", "-", n).lower() for n in [*sys.argv[3].split(), "setuptools"]}
blocks, current = [], []
for line in open(source):
    if line.strip() and not line[0].isspace() and not line.startswith("#"):
        current = [line]
        blocks.append(current)
    elif current and line[0].isspace():
        current.append(line)
kept = [b for b in blocks if re.sub(r"[-_.]+", "-", re.split(r"[=<>;\[ ]", b[0], maxsplit=1)[0]).lower() in wanted]
missing = wanted - {re.sub(r"[-_.]+", "-", re.split(r"[=<>;\[ ]", b[0], maxsplit=1)[0]).lower() for b in kept}
if missing:
    sys.exit(f"not in the lock: {sorted(missing)}")
open(target, "w").write("".join("".join(b) for b in kept))
PY
fi
bash "$repo/scripts/install-lock.sh" "$VENV/bin/python" "$lock" "${pip_args[@]}"
"$VENV/bin/python" -m pip install "${pip_args[@]}" --no-deps "$kernels"/*.whl
"$VENV/bin/python" -m pip install "${pip_args[@]}" --no-deps --no-build-isolation "$repo"

echo "== 3. checks"
after=$(torch_identity "$VENV/bin/python")
[ "$after" = "$before" ] || { echo "torch changed: before '$before', after '$after'" >&2; exit 1; }
"$VENV/bin/python" -c 'import torch, mamba_ssm, causal_conv1d
assert torch.cuda.is_available(), "CUDA is not usable"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
print("mamba_ssm", mamba_ssm.__version__, "causal_conv1d", causal_conv1d.__version__)'
echo "agent ready: $VENV/bin/ctxscope"
