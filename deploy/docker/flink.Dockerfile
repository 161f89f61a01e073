# syntax=docker/dockerfile:1
#
# ticklake's Flink image: Flink 1.20 on Java 17, the pinned connector jars in lib/, the S3
# filesystem plugin in plugins/s3-fs-hadoop/, and the Flink job environment (Python 3.11 with
# PyFlink and ticklake, installed from uv.lock) at /opt/venv, so that
# `python -m ticklake.jobs.<job>` and `flink run -pym ticklake.jobs.<job>` work in the container.
#
#   docker build -f deploy/docker/flink.Dockerfile -t ticklake/flink:0.1.0 .
#
# The build context is the repository root (.dockerignore keeps state, virtualenvs, caches and
# credentials out). Used by docker-compose.yml and by the FlinkDeployment in deploy/k8s/.

# 1.20.4 is the newest 1.20 Java 17 tag we could confirm; PyFlink comes from uv.lock (1.20.5).
ARG FLINK_IMAGE=flink:1.20.4-java17
# The same uv as bin/ticklake (UV_VERSION) and the same Python line as uv.lock (==3.11.*).
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

# ---------------------------------------------------------------------------------------------
# Stage 1: the jar sets, fetched by Maven (--strict-checksums) and then compared with our own
# SHA-256 pins: the exact set of files and the exact bytes (as ticklake.stack.downloads does).
# ---------------------------------------------------------------------------------------------
FROM maven:3.9-eclipse-temurin-17 AS jars
WORKDIR /build
COPY stack/maven/flink-connectors.xml stack/maven/flink-connectors.sha256 \
     stack/maven/flink-s3-plugin.xml stack/maven/flink-s3-plugin.sha256 ./
RUN --mount=type=cache,target=/root/.m2 \
    set -eu; \
    for jarset in flink-connectors flink-s3-plugin; do \
      mvn -B -q --strict-checksums -f "$jarset.xml" dependency:copy-dependencies \
          -DincludeScope=runtime -DoutputDirectory="/jars/$jarset"; \
      grep -v -e '^#' -e '^[[:space:]]*$' "$jarset.sha256" > "/build/$jarset.sums"; \
      (cd "/jars/$jarset" && sha256sum --strict -c "/build/$jarset.sums"); \
      awk '{sub(/^\*/, "", $2); print $2}' "/build/$jarset.sums" | sort > "/build/$jarset.pinned"; \
      (cd "/jars/$jarset" && ls -1) | sort > "/build/$jarset.present"; \
      if ! diff -u "/build/$jarset.pinned" "/build/$jarset.present"; then \
        echo "the $jarset jars differ from stack/maven/$jarset.sha256" >&2; exit 1; \
      fi; \
    done

# ---------------------------------------------------------------------------------------------
# Stage 1b: ticklake's Flink SQL functions, relay connector and Avro format (jobs/java/src, with
# the META-INF/services registrations of its table factories) and its patched dependency classes
# (jobs/java/patches), compiled against this image's own Flink jars (and, for the patches, the
# connector jars), as `ticklake setup` compiles them against the PyFlink wheel's
# (stack/components/flink.py).
# ---------------------------------------------------------------------------------------------
FROM ${FLINK_IMAGE} AS flink-dist
FROM maven:3.9-eclipse-temurin-17 AS functions
COPY --from=flink-dist /opt/flink/lib/ /flink-lib/
COPY --from=jars /jars/flink-connectors/ /connector-lib/
COPY jobs/java/src/ /build/src/
COPY jobs/java/patches/ /build/patches/
RUN set -eu; \
    mkdir -p /jars; \
    find /build/src -name '*.java' > /build/sources.txt; \
    javac --release 11 -proc:none -Xlint:all -Werror -d /build/classes \
        -cp '/flink-lib/*:/connector-lib/*' @/build/sources.txt; \
    cp -r /build/src/META-INF /build/classes/; \
    jar --create --file /jars/ticklake-functions.jar -C /build/classes .; \
    find /build/patches -name '*.java' > /build/patches.txt; \
    javac --release 11 -proc:none -Xlint:all -Werror -d /build/patch-classes \
        -cp '/flink-lib/*:/connector-lib/*' @/build/patches.txt; \
    jar --create --file /jars/00-ticklake-patches.jar -C /build/patch-classes .

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------------------------
# Stage 2: the runtime image.
# ---------------------------------------------------------------------------------------------
FROM ${FLINK_IMAGE}
ARG PYTHON_VERSION=3.11.18

USER root
# curl serves the healthchecks (docker-compose.yml).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends curl; \
    rm -rf /var/lib/apt/lists/*

# The job environment's interpreter for the Python workers and the Flink client. In Kubernetes the
# operator writes the configuration instead, so the FlinkDeployment sets the same two keys.
RUN set -eux; \
    bash "$FLINK_HOME/bin/config-parser-utils.sh" "$FLINK_HOME/conf" "$FLINK_HOME/bin" \
        "$FLINK_HOME/lib" \
        -Dpython.executable=/opt/venv/bin/python \
        -Dpython.client.executable=/opt/venv/bin/python; \
    chown -R flink:flink "$FLINK_HOME/conf"

# Connector jars on the parent classpath (as HADOOP_CLASSPATH does for the local stack), the S3
# filesystem as a plugin (never in lib/).
COPY --from=jars --chown=flink:flink /jars/flink-connectors/ /opt/flink/lib/
COPY --from=jars --chown=flink:flink /jars/flink-s3-plugin/ /opt/flink/plugins/s3-fs-hadoop/
COPY --from=functions --chown=flink:flink /jars/ticklake-functions.jar /opt/flink/lib/
# Flink's start scripts put lib/ on the classpath in sorted order (flink-dist last): the "00-"
# puts the patches before the Iceberg runtime, so their classes load in place of its own.
COPY --from=functions --chown=flink:flink /jars/00-ticklake-patches.jar /opt/flink/lib/

# Python 3.11 and the locked Flink environment: dependencies first (cached while uv.lock is
# unchanged), then ticklake itself, non-editable.
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
WORKDIR /opt/ticklake
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    set -eux; \
    uv python install "$PYTHON_VERSION"; \
    uv sync --locked --extra flink --no-dev --no-install-project --python "$PYTHON_VERSION"
COPY . /opt/ticklake/
RUN --mount=type=cache,target=/root/.cache/uv \
    set -eux; \
    uv sync --locked --extra flink --no-dev --no-editable --python "$PYTHON_VERSION"; \
    cd /; rm -rf /opt/ticklake; \
    /opt/venv/bin/python -c "import pyflink, ticklake.jobs, ticklake.settings"

ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/flink
# The flink user (uid 9999) of the base image; numeric so that runAsNonRoot can verify it.
USER 9999:9999
