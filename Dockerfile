# Flow-run image for the ECS work pool: Python 3.13 slim, locked runtime deps only, non-root.
# Stage 1 resolves the environment from uv.lock; stage 2 copies just the venv and the code.
# prefect.yaml builds it with prefect-docker (docker-py, the classic builder): no BuildKit-only
# syntax such as RUN --mount. Build by hand with:
#   docker build --platform linux/amd64 -t bq-view-to-tableau .

# Both stages must use the same Python: the venv's interpreter is a link to /usr/local/bin.
ARG PYTHON_IMAGE=python:3.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.13 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
# Same uv as ./dev, so the lock is read the same way.
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /src
# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-default-groups --no-install-project

FROM ${PYTHON_IMAGE}
# hyperd (tableauhyperapi) links only glibc (libc, libm, libdl, libpthread, librt): nothing to add.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --create-home app
# google-cloud-storage 3.17 otherwise fetches bucket metadata in a background thread on every
# bucket call (for tracing attributes we don't export), needing storage.buckets.get.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA=true
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Runtime code only (no tests, stand-ins or benchmarks); prefect.yaml's pull step cds here.
COPY --chown=app:app flows/ ./flows/
COPY --chown=app:app blocks/ ./blocks/
USER 10001:10001
# Prefect's ECS worker replaces the command with the flow run's own.
CMD ["python", "-m", "prefect.engine"]
