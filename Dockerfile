# syntax=docker/dockerfile:1
# The one image every pipeline step runs in (make image). Build arguments:
#   BASE_IMAGE  a Python 3.11 image with python3 -m venv (python:3.11-slim; containers/base-image.sh
#               makes one from Debian packages where no registry is reachable)
#   TENSORFLOW  the TensorFlow requirement; GPU: "tensorflow[and-cuda]==2.21.*" (CUDA from PyPI)
#   EXTRAS      optional extras baked in: vertex (Vertex AI and the vertex:// registry), fast-eval
#   CODE_VERSION  package version + git commit, recorded in the image (make image sets it)
# A CA bundle for HTTPS through a proxy is mounted at build time only (secret id "ca"), never
# copied into a layer:  --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS deps
ARG TENSORFLOW="tensorflow==2.21.*"
ARG EXTRAS=vertex
ARG PIP_VERSION=24.3.1
WORKDIR /src
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml ./
# The dependencies alone first, read from pyproject.toml (only), so this large layer is rebuilt
# only when pyproject.toml changes, not on every code or README change. pip's download cache is a
# build cache mount.
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/venv \
    && pip install --upgrade "pip==${PIP_VERSION}" \
    && python3 -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in sys.argv[2].split(",") if e]; \
reqs = [r for r in p["dependencies"] if not r.startswith("tensorflow=")]; \
reqs += [r for e in extras for r in p["optional-dependencies"][e]]; \
print("\n".join(reqs + [sys.argv[1]]))' "${TENSORFLOW}" "${EXTRAS}" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# The project's wheel, in a stage of its own so the dependency venv above stays as installed.
FROM deps AS build
COPY README.md ./
COPY vision_core ./vision_core
COPY components ./components
COPY pipelines ./pipelines
COPY configs ./configs
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --no-deps --no-index --no-warn-script-location --root /staging /wheels/*.whl

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2
# Layer 1: the dependencies, copied once (nothing later deletes from it); reused from the cache
# while pyproject.toml is unchanged.
COPY --from=deps /opt/venv /opt/venv
# Layer 2: the project itself (a few MB), installed from its wheel in the build stage under
# /staging and copied to where pip put it (/opt/venv/...). A COPY is cached by its content, so a
# code change always reaches the image (a RUN with a bind mount would be cached by its text).
COPY --from=build /staging/ /
RUN useradd --create-home --uid 1000 vision
COPY configs /opt/vision-pipelines/configs
# Last, so a new commit changes no file layer: the code version the step cache keys and the
# registry lineage record (pipelines/training.py reads it).
ARG CODE_VERSION=""
ENV VISION_PIPELINES_CODE_VERSION=${CODE_VERSION}
LABEL org.opencontainers.image.title="vision-pipelines" \
      org.opencontainers.image.version="${CODE_VERSION}"
USER 1000
WORKDIR /home/vision
# No ENTRYPOINT: Kubernetes, Vertex and KFP's DockerRunner run each step's own command.
CMD ["vision-pipelines", "--help"]
