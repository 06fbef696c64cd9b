# The one image every pipeline step runs in. CPU by default; for GPUs build on a TensorFlow GPU
# base:  docker build --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu -t IMAGE .
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Optional extras baked in: vertex (Vertex AI pipelines and the vertex:// registry), fast-eval.
ARG EXTRAS=vertex
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vision_core ./vision_core
COPY components ./components
COPY pipelines ./pipelines
COPY configs ./configs
RUN python -m pip install --no-cache-dir --upgrade pip==24.3.1 \
    && python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --create-home --uid 1000 vision
COPY configs /opt/vision-pipelines/configs
USER 1000
WORKDIR /home/vision
ENTRYPOINT ["vision-pipelines"]
CMD ["--help"]
