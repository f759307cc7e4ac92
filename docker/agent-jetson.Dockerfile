# ctxscope agent for Jetson Orin (JetPack 6 / L4T r36.4, CUDA 12.6, Python 3.10). Build on the board
# (or on an arm64 host with the NVIDIA container runtime) from the repository root:
#   docker build -f docker/agent-jetson.Dockerfile -t ctxscope-agent:jetson .
# Run with the NVIDIA runtime, the GPU's device group (L4T's nodes belong to `video`), jtop's socket so
# power and thermals can be read, and the board's enrollment bundle (`ctxscope collector enroll`: a
# broker beyond loopback needs its credentials and TLS), readable by the image's user, uid 10001:
#   sudo install -d -o 10001 -m 0700 /etc/ctxscope
#   sudo install -o 10001 -m 0600 ~/ctxscope-bundle/agent.toml ~/ctxscope-bundle/ca.crt /etc/ctxscope/
#   docker run -d --restart unless-stopped --log-driver local --runtime nvidia --group-add video \
#     --group-add "$(getent group jtop | cut -d: -f3)" -v /run/jtop.sock:/run/jtop.sock \
#     -v /etc/ctxscope:/etc/ctxscope:ro -v ctxscope-spool:/var/lib/ctxscope \
#     ctxscope-agent:jetson --config /etc/ctxscope/agent.toml
# (jtop's socket belongs to the group jtop, and its service must run the lock's jetson-stats version.)
# torch >= 2.6 for JetPack 6 comes from NVIDIA's jetson-ai-lab index (CUDA 12.6 builds for sm_87);
# mamba-ssm and causal-conv1d are not built here: the engine records its torch fallback for SSM layers
# (see jetson/README.md for building the kernels on the board).
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0

ARG TORCH_INDEX=https://pypi.jetson-ai-lab.io/jp6/cu126
ARG TORCH_VERSION=2.8.0
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CTXSCOPE_SPOOL_PATH=/var/lib/ctxscope/spool.sqlite
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && python3 -c "import torch; assert torch.version.cuda, 'not a CUDA build'; print(torch.__version__)"
WORKDIR /src
COPY requirements/agent.txt requirements/agent.txt
COPY scripts/install-lock.sh scripts/install-lock.sh
# Everything but torch comes from the hashed lock; --no-deps keeps the torch installed above.
RUN bash scripts/install-lock.sh python3 requirements/agent.txt
COPY pyproject.toml setup.py README.md ./
COPY ctxscope ctxscope
COPY agent agent
COPY shared shared
COPY collector collector
RUN python3 -m pip install --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --home-dir /var/lib/ctxscope ctxscope \
    && install -d -o 10001 -g ctxscope /var/lib/ctxscope
USER 10001
VOLUME /var/lib/ctxscope
ENTRYPOINT ["ctxscope", "agent", "serve"]
