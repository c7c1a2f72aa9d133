# The depthstream bridge: the page, the WebSocket stream, health and metrics. Build from the
# repository root:  docker build -f deploy/bridge.Dockerfile -t depthstream-bridge .
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8080

WORKDIR /app
COPY deploy/requirements-bridge.txt /app/requirements-bridge.txt
RUN pip install --no-cache-dir -r /app/requirements-bridge.txt

# only what the bridge runs: the bridge, the shared contract, the page
COPY depthstream/ /app/depthstream/
COPY bridge/ /app/bridge/
COPY web/ /app/web/

RUN useradd --system --uid 10001 --no-create-home depthstream
USER 10001

EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "bridge"]
