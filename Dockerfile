# Flow-run image for the ECS push work pool: Python 3.13 slim, locked runtime deps only, non-root.
# Stage 1 resolves the environment from uv.lock; stage 2 copies just the venv and the code.

FROM python:3.13-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

FROM python:3.13-slim-bookworm
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --create-home app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app flows/ ./flows/
COPY --chown=app:app blocks/ ./blocks/
USER 10001:10001
# Prefect's ECS worker overrides the command with the flow-run entrypoint.
CMD ["python", "-m", "prefect.engine"]
