# ctxscope agent for desktop/server NVIDIA GPUs (CUDA 12.6, torch 2.6, mamba-ssm/causal-conv1d kernels).
# Build from the repository root (the kernel stage compiles for TORCH_CUDA_ARCH_LIST, ~20 min):
#   docker build -f docker/agent-cuda.Dockerfile -t ctxscope-agent:cuda .
# Run with the GPU and the device's enrollment bundle (`ctxscope collector enroll`: a broker beyond
# loopback needs its credentials and TLS), readable by the image's user, uid 10001:
#   sudo install -d -o 10001 -m 0700 /etc/ctxscope
#   sudo install -o 10001 -m 0600 ~/ctxscope-bundle/agent.toml ~/ctxscope-bundle/ca.crt /etc/ctxscope/
#   docker run -d --restart unless-stopped --log-driver local --gpus all \
#     -v /etc/ctxscope:/etc/ctxscope:ro -v ctxscope-spool:/var/lib/ctxscope \
#     ctxscope-agent:cuda --config /etc/ctxscope/agent.toml
# docker/agent-cuda-steps.sh follows the same steps without a container engine.
ARG TORCH_IMAGE=pytorch/pytorch:2.6.0-cuda12.6-cudnn9

FROM ${TORCH_IMAGE}-devel AS kernels
# sm_80 (A100), sm_86 (RTX 30), sm_89 (RTX 40/L4/L40), sm_90 (H100/H200); add 8.7 for an Orin build.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"
ARG MAMBA_SSM_VERSION=2.3.2.post1
ARG CAUSAL_CONV1D_VERSION=1.7.0
# `import mamba_ssm` imports einops, and the kernels are installed with --no-deps: it comes with them
ARG EINOPS_VERSION=0.8.2
ENV PIP_NO_CACHE_DIR=1 MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=8 \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}
# Built against the image's torch, without build isolation so pip cannot swap torch for another build.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels \
      "causal-conv1d==${CAUSAL_CONV1D_VERSION}" "mamba-ssm==${MAMBA_SSM_VERSION}" "einops==${EINOPS_VERSION}"

FROM ${TORCH_IMAGE}-runtime
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CTXSCOPE_SPOOL_PATH=/var/lib/ctxscope/spool.sqlite
WORKDIR /src
COPY requirements/agent.txt requirements/agent.txt
COPY scripts/install-lock.sh scripts/install-lock.sh
# Everything but torch comes from the hashed lock; --no-deps keeps the image's torch.
RUN bash scripts/install-lock.sh python requirements/agent.txt
COPY --from=kernels /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
COPY pyproject.toml setup.py README.md ./
COPY ctxscope ctxscope
COPY agent agent
COPY shared shared
COPY collector collector
RUN pip install --no-deps --no-build-isolation . \
    && python -c "import torch, mamba_ssm, causal_conv1d; \
assert tuple(map(int, torch.__version__.split('.')[:2])) >= (2, 6), torch.__version__" \
    && useradd --system --uid 10001 --home-dir /var/lib/ctxscope ctxscope \
    && install -d -o 10001 -g ctxscope /var/lib/ctxscope
USER 10001
VOLUME /var/lib/ctxscope
ENTRYPOINT ["ctxscope", "agent", "serve"]
