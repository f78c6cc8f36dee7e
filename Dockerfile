# Two images from one file, both Python 3.13 slim, locked dependencies only, non-root:
#   (default, last stage)  the flow-run image of the ECS work pool: runtime packages + our code
#   --target worker        the self-hosted ECS worker (deployments/README.md §7): prefect-aws only
# prefect.yaml builds the default target with prefect-docker (docker-py, the classic builder): no
# BuildKit-only syntax such as RUN --mount. Build by hand with:
#   docker build --platform linux/amd64 -t bq-view-to-tableau .
#   docker build --platform linux/amd64 --target worker -t bq-view-to-tableau-worker .

# Every stage must use the same Python: a venv's interpreter is a link to /usr/local/bin.
ARG PYTHON_IMAGE=python:3.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.13 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
# Same uv as ./dev, so the lock is read the same way.
RUN pip install --no-cache-dir uv==0.13.8
# The project lives at /app in the image, so the editable install below points there.
WORKDIR /app
COPY pyproject.toml uv.lock ./

FROM uv AS build
# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
RUN uv sync --frozen --no-default-groups --no-install-project
COPY flows/ ./flows/
COPY blocks/ ./blocks/
# Install the project itself (so `prefect block register -m blocks` and `python -m blocks` work
# from any directory), then compile our modules: the container is read-only for Python
# (PYTHONDONTWRITEBYTECODE) and would otherwise compile them on every start.
RUN uv sync --frozen --no-default-groups \
    && python -m compileall -q --invalidation-mode checked-hash flows blocks

FROM uv AS worker-build
RUN uv sync --frozen --only-group worker

FROM ${PYTHON_IMAGE} AS worker
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --create-home app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
COPY --from=worker-build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# The ECS service's task definition (deployments/ecs/) names the pool.
CMD ["prefect", "worker", "start", "--type", "ecs", "--pool", "ecs-hybrid"]

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
# Runtime code only (no tests, stand-ins or benchmarks), with its bytecode; prefect.yaml's pull
# step cds here.
COPY --from=build --chown=app:app /app/flows ./flows/
COPY --from=build --chown=app:app /app/blocks ./blocks/
# The catalog, for `python -m flows plan|reconcile|run` in a task (ECS Exec); runs get their
# config from their deployment.
COPY --chown=app:app deployments/pipelines.yaml ./deployments/
USER 10001:10001
# Prefect's ECS worker replaces the command with the flow run's own.
CMD ["python", "-m", "prefect.engine"]
