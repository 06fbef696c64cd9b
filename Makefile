# vision-pipelines: `make run` and `make test` set up .venv themselves on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1

.PHONY: setup run test lint format bench compile image clean

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
	$(VENV)/bin/vision-pipelines compile -o artifacts/shapes_segmentation_pipeline.yaml

# The image every pipeline step runs in (needs Docker); GPU: make image BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
IMAGE      ?= vision-pipelines:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BASE_IMAGE ?= python:3.11-slim
image:
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

clean:
	rm -rf artifacts .pytest_cache
