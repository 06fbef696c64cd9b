"""The detection pipeline: compiling, and a tiny convert → train → evaluate → gate → push run."""

import json
import os
import sys

import pytest
import yaml

from components.registry import open_registry
from pipelines.cli import main as cli_main
from pipelines.config import PROJECT_ROOT, load_pipeline_config
from pipelines.local_run import run_local

sys.path.insert(0, os.path.dirname(__file__))
from tiny_pipeline import write_tiny_pipeline  # noqa: E402

# Compiling for a cluster needs an image it can pull.
IMAGE = "registry.example/vision-pipelines:test"

SHAPES_RETINANET = f"{PROJECT_ROOT}/configs/pipelines/shapes_retinanet.yaml"


def test_shapes_retinanet_compiles_with_the_coco_evaluator(tmp_path):
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", SHAPES_RETINANET, "-o", str(out), "--image", IMAGE]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert {"convert-dataset-op", "train-op", "evaluate-op", "validate-op"} <= set(tasks)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gate_metric"]["defaultValue"] == "AP50"
    assert params["gate_min_value"]["defaultValue"] == 0.8
    assert params["class_names"]["defaultValue"] == ["background", "circle", "square", "triangle"]
    for step in ("convert-dataset-op", "evaluate-op"):
        inputs = tasks[step]["inputs"]["parameters"]
        assert inputs["task"]["runtimeValue"]["constant"] == "detection"
    exp = yaml.safe_load(params["experiment_yaml"]["defaultValue"])
    assert exp["task"]["name"] == "retinanet"
    assert exp["task"]["model"]["num_classes"] == 4


@pytest.mark.slow
def test_detection_pipeline_runs_end_to_end(tmp_path):
    exp = {
        "experiment": "shapes_retinanet",
        "task": {
            "model": {
                "input_size": [64, 64, 3],
                "backbone": {"resnet": {"model_id": 10, "depth_multiplier": 0.25}},
                "decoder": {"fpn": {"num_filters": 16}},
                "head": {"num_convs": 1, "num_filters": 16},
            },
            "train_data": {"global_batch_size": 4},
            "validation_data": {"global_batch_size": 4},
        },
    }
    pipe_path = write_tiny_pipeline(
        tmp_path,
        exp,
        name="tiny-det",
        task="detection",
        gate_metric="AP50",
        num_validation=5,
        seed=2,
        pipeline_root="artifacts/pipeline_root",
    )
    config = load_pipeline_config(str(pipe_path))

    summary = run_local(config)
    metrics = summary["metrics"]
    assert metrics["num_examples"] == 5
    for key in ("AP", "AP50", "AP75", "ARmax100"):
        assert -1.0 <= metrics[key] <= 1.0
    assert summary["gate"]["passed"] is True
    assert summary["registry"]["version"] == 1
    registry = open_registry(config.registry.uri)
    assert registry.get_alias("tiny-det", "champion") == 1
    record = registry.get_version("tiny-det", 1)
    assert record.metrics["AP50"] == metrics["AP50"]
    with open(summary["report"]) as f:
        report = f.read()
    assert "| circle |" in report and "AP50" in report
    with open(summary["figures"]) as f:
        assert "data:image/png;base64," in f.read()
    export_dir = summary["train"]["export_dir"]
    with open(os.path.join(export_dir, "class_names.json")) as f:
        assert json.load(f) == ["background", "circle", "square", "triangle"]
