# ctxscope collector (ingest, store, web dashboard). Build from the repository root:
#   docker build -f docker/collector.Dockerfile -t ctxscope-collector .
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ctxscope ctxscope
COPY agent agent
COPY shared shared
COPY collector collector
RUN pip install ".[collector,postgres]"
VOLUME /var/lib/ctxscope
EXPOSE 8321
ENTRYPOINT ["ctxscope", "collector", "run"]
