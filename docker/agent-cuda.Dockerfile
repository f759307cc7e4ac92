# ctxscope agent for desktop/server NVIDIA GPUs. Build from the repository root:
#   docker build -f docker/agent-cuda.Dockerfile -t ctxscope-agent:cuda .
# Run with the GPU and a broker address:
#   docker run --gpus all -e CTXSCOPE_BROKER_HOST=collector -e CTXSCOPE_DEVICE=rtx4090-a \
#     -v ctxscope-spool:/var/lib/ctxscope ctxscope-agent:cuda
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CTXSCOPE_SPOOL_PATH=/var/lib/ctxscope/spool.sqlite
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ctxscope ctxscope
COPY agent agent
COPY shared shared
COPY collector collector
# The SSM kernels compile against the image's torch and CUDA (several minutes).
RUN pip install ".[agent]" && MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation ".[cuda]"
VOLUME /var/lib/ctxscope
ENTRYPOINT ["ctxscope", "agent", "serve"]
