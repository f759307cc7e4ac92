# ctxscope agent for Jetson Orin (JetPack 6 / L4T r36). Build on the board from the repository root:
#   docker build -f docker/agent-jetson.Dockerfile -t ctxscope-agent:jetson .
# Run with the NVIDIA runtime and jtop's socket so power and thermals can be read:
#   docker run --runtime nvidia -v /run/jtop.sock:/run/jtop.sock \
#     -e CTXSCOPE_BROKER_HOST=collector.local -e CTXSCOPE_DEVICE=orin-nx-01 \
#     -v ctxscope-spool:/var/lib/ctxscope ctxscope-agent:jetson
FROM nvcr.io/nvidia/l4t-pytorch:r36.2.0-pth2.2-py3

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CTXSCOPE_SPOOL_PATH=/var/lib/ctxscope/spool.sqlite
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ctxscope ctxscope
COPY agent agent
COPY shared shared
COPY collector collector
# torch comes from the L4T image; install the rest without replacing it.
RUN pip install ".[jetson]" "transformers>=5.17" nvidia-ml-py
VOLUME /var/lib/ctxscope
ENTRYPOINT ["ctxscope", "agent", "serve"]
