# ctxscope collector (ingest, store, web dashboard). Build from the repository root:
#   docker build -f docker/collector.Dockerfile -t ctxscope-collector .
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY requirements/collector.txt requirements/collector.txt
COPY scripts/install-lock.sh scripts/install-lock.sh
# The hashed lock pins every dependency; --no-deps installs nothing outside it.
RUN bash scripts/install-lock.sh python requirements/collector.txt
COPY pyproject.toml setup.py README.md ./
COPY ctxscope ctxscope
COPY agent agent
COPY shared shared
COPY collector collector
RUN pip install --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --home-dir /var/lib/ctxscope ctxscope \
    && install -d -o 10001 -g ctxscope /var/lib/ctxscope
USER 10001
VOLUME /var/lib/ctxscope
EXPOSE 8321
ENTRYPOINT ["ctxscope", "collector", "run"]
