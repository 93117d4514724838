# syntax=docker/dockerfile:1
# The agentgroup image: one entrypoint, `agentgroup`; the chart runs `agentgroup webhook` and
# `agentgroup controller`. Two stages: the build stage makes a virtualenv holding agentgroup and its
# runtime dependencies only (no dev extras, no build tools); the runtime stage is the same Python base
# with that virtualenv, without pip, running as a non-root user.
#
#   docker build -t ghcr.io/volcano-sh/agentgroup:0.1.0 .
#
# Pin PYTHON_IMAGE by digest in release builds (python:3.12-slim-bookworm@sha256:...); both stages must
# use the same image, since the virtualenv refers to its interpreter by path.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): tests, hack/, bench/ and deploy/ stay out.
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY webhook/ webhook/
COPY controller/ controller/
COPY certs/ certs/
COPY agentgroup/ agentgroup/
# Dependencies come as binary wheels only (nothing is compiled here); pip byte-compiles what it
# installs, so the read-only runtime never needs to write .pyc files.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/agentgroup \
 && /opt/agentgroup/bin/python -m pip install --only-binary=:all: /wheels/agentgroup-*.whl \
 && /opt/agentgroup/bin/python -m pip uninstall --yes pip \
 && /opt/agentgroup/bin/agentgroup --version

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="agentgroup" \
      org.opencontainers.image.description="Admission webhook and controller for agentcube AgentGroups" \
      org.opencontainers.image.source="https://github.com/volcano-sh/agentcube" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# The base image's installer is not a runtime dependency (pip skips the ones that are not there).
RUN PIP_ROOT_USER_ACTION=ignore python -m pip uninstall --yes pip setuptools wheel
COPY --from=build /opt/agentgroup /opt/agentgroup
ENV PATH=/opt/agentgroup/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# The same non-root user the chart's securityContext sets (runAsUser/runAsGroup 65532); numeric, so
# that the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# webhook HTTPS, /metrics, /healthz and /readyz
EXPOSE 9443 8080 8081
ENTRYPOINT ["/opt/agentgroup/bin/agentgroup"]
CMD ["--help"]
