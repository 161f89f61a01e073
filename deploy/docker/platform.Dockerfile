# syntax=docker/dockerfile:1
#
# ticklake's platform image: Python 3.11 with the platform environment (the `ticklake` CLI,
# confluent-kafka, pyzmq, pyiceberg, ...) installed from uv.lock at /opt/venv. It runs the
# platform's services (`ticklake risk forward`, later the relay and the ingestors); Flink jobs
# run in the Flink image (deploy/docker/flink.Dockerfile), whose environment is another one.
#
#   docker build -f deploy/docker/platform.Dockerfile -t ticklake/platform:0.1.0 .
#
# The build context is the repository root (.dockerignore keeps state, virtualenvs, caches and
# credentials out). Used by docker-compose.yml (risk-forwarder) and deploy/k8s/.

# The same uv and Python as the Flink image (UV_VERSION of bin/ticklake, uv.lock's ==3.11.*).
ARG BASE_IMAGE=debian:12.12-slim
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE}
ARG PYTHON_VERSION=3.11.18

COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
WORKDIR /opt/ticklake
# Dependencies first (cached while uv.lock is unchanged), then ticklake itself, non-editable.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    set -eux; \
    uv python install "$PYTHON_VERSION"; \
    uv sync --locked --extra platform --no-dev --no-install-project --python "$PYTHON_VERSION"
COPY . /opt/ticklake/
RUN --mount=type=cache,target=/root/.cache/uv \
    set -eux; \
    uv sync --locked --extra platform --no-dev --no-editable --python "$PYTHON_VERSION"; \
    cd /; rm -rf /opt/ticklake; \
    /opt/venv/bin/ticklake risk forward --help >/dev/null

# State (journals of the services) under TICKLAKE_HOME, a volume in compose and Kubernetes.
RUN set -eux; \
    groupadd --gid 10001 ticklake; \
    useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin ticklake; \
    install -d -o 10001 -g 10001 /var/lib/ticklake
ENV PATH=/opt/venv/bin:$PATH \
    TICKLAKE_HOME=/var/lib/ticklake \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/ticklake
# numeric, so that runAsNonRoot can verify it
USER 10001:10001
ENTRYPOINT ["ticklake"]
CMD ["--help"]
