# syntax=docker/dockerfile:1
# llmroute gateway image: `docker build -t llmroute .` (see docs/DEPLOY.md).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
# Optional dependencies baked into the image, comma-separated (e.g. postgres,redis).
ARG EXTRAS=postgres,redis
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/llmroute
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llmroute ./llmroute
RUN /opt/llmroute/bin/pip install ".[${EXTRAS}]"

FROM python:${PYTHON_VERSION}-slim
# The uid is numeric so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 llmroute \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/llmroute --shell /usr/sbin/nologin llmroute \
    && mkdir -p /etc/llmroute /var/lib/llmroute \
    && chown llmroute:llmroute /var/lib/llmroute
COPY --from=build /opt/llmroute /opt/llmroute
# XDG_DATA_HOME: a SQLite ledger, when no DSN is given, lands in /var/lib/llmroute (mount a volume there).
ENV PATH=/opt/llmroute/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_DATA_HOME=/var/lib \
    LLMROUTE_CONFIG=/etc/llmroute/llmroute.yaml
USER 10001:10001
WORKDIR /var/lib/llmroute
EXPOSE 8080
# /health answers as long as the process serves HTTP; the image has no curl, so Python asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"]
# Listening on 0.0.0.0 needs gateway keys (LLMROUTE_API_KEYS or gateway.api_keys): without them the gateway
# refuses to start rather than serve anyone who can reach it.
ENTRYPOINT ["llmroute", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
