# vision-pipelines: `make run` and `make test` set up .venv themselves on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1

.PHONY: setup run test lint format bench compile image base-image image-push test-image clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev,vertex]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/vision-pipelines run $(CONFIG)

# Test files spread over PYTEST_WORKERS processes (pytest-xdist; whole files per worker, so
# module fixtures are built once); PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/convert_throughput.py

compile: $(STAMP)
	$(VENV)/bin/vision-pipelines compile -o artifacts/shapes_segmentation_pipeline.yaml \
	    $(if $(IMAGE),--image $(IMAGE))

# The image every pipeline step runs in, built with docker, podman or buildah (whichever works;
# pipelines/image.py). BASE_IMAGE overrides the base (default python:3.11-slim, or the Debian-made
# base of containers/base-image.sh where no registry has one); GPU=1 builds TensorFlow with CUDA.
VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
LOCAL_IMAGE ?= vision-pipelines:$(VERSION)
IMAGE_ARGS   = $(if $(BASE_IMAGE),--base $(BASE_IMAGE)) $(if $(GPU),--gpu)
image:
	$(PYTHON) -m pipelines.image build --image $(LOCAL_IMAGE) $(IMAGE_ARGS)

# The Python 3.11 base made from Debian packages (root, debootstrap, podman).
base-image:
	containers/base-image.sh

# make image-push IMAGE=REGISTRY/PATH:TAG [TLS_VERIFY=false]: pushes the built image and records
# its digest (artifacts/image-push.json); compile/submit/schedule then pin REGISTRY/PATH@sha256:...
image-push:
	@test -n "$(IMAGE)" || { echo "make image-push IMAGE=REGISTRY/PATH:TAG" >&2; exit 2; }
	$(PYTHON) -m pipelines.image push --image $(IMAGE) --source $(LOCAL_IMAGE) \
	    --tls-verify $(or $(TLS_VERIFY),true)

# Builds the image (or reuses an up-to-date one), then runs the container tests: the shapes
# segmentation pipeline with every step in the image, Beam's portable runner with its workers in
# the image, and a push to a loopback registry.
test-image: $(STAMP) image
	VISION_PIPELINES_TEST_IMAGE=$(LOCAL_IMAGE) $(PY) -m pytest -q -p no:xdist -m image \
	    tests/container $(PYTEST_ARGS)

clean:
	rm -rf artifacts .pytest_cache
