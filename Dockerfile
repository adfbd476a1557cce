# One image for every role of the platform; its command picks the role:
#   docker run IMAGE webserver | daemon | code-server | api   (platform/entrypoint.sh)
# Dependencies come from uv.lock exactly as `make setup` installs them (without the dev group).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install uv==0.13.8
WORKDIR /app
# The locked dependencies first: a change to the code does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md dagster.yaml workspace.yaml ./
COPY mlplatform ./mlplatform
COPY platform ./platform
RUN uv sync --frozen --no-dev

FROM python:${PYTHON_VERSION}-slim-bookworm
RUN groupadd --gid 10001 mlplatform \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin mlplatform \
    && mkdir -p /data/dagster \
    && chown -R mlplatform:mlplatform /data
COPY --from=build --chown=mlplatform:mlplatform /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLPLATFORM_HOME=/data \
    DAGSTER_HOME=/data/dagster
USER 10001:10001
WORKDIR /app
# The embedded default instance; mount platform/dagster.yaml over it for Postgres.
RUN cp dagster.yaml /data/dagster/dagster.yaml
VOLUME ["/data"]
EXPOSE 3000 4000 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["/app/platform/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/app/platform/entrypoint.sh"]
CMD ["webserver"]
