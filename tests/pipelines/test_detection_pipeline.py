"""The detection pipeline: compiling, and a tiny convert → train → evaluate → gate → push run."""

import json
import os

import pytest
import yaml

from components.registry import open_registry
from pipelines.cli import main as cli_main
from pipelines.config import PROJECT_ROOT, load_pipeline_config
from pipelines.local_run import run_local

SHAPES_RETINANET = f"{PROJECT_ROOT}/configs/pipelines/shapes_retinanet.yaml"


def test_shapes_retinanet_compiles_with_the_coco_evaluator(tmp_path):
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", SHAPES_RETINANET, "-o", str(out)]) == 0
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


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


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
        "trainer": {
            "train_steps": 4,
            "validation_interval": 4,
            "steps_per_loop": 2,
            "checkpoint_interval": 2,
            "optimizer_config": {
                "learning_rate": {"cosine": {"decay_steps": 4}},
                "warmup": {"linear": {"warmup_steps": 1}},
            },
        },
    }
    _write(tmp_path / "configs" / "experiments" / "tiny.yaml", exp)
    pipe = {
        "name": "tiny-det",
        "task": "detection",
        "dataset": {
            "source": "shapes",
            "shapes": {"num_train": 8, "num_validation": 5, "image_size": [64, 64], "seed": 2},
            "num_shards": 2,
        },
        "experiment": {"config_file": "configs/experiments/tiny.yaml"},
        "gate": {"metric": "AP50", "min_value": 0.0, "max_regression": 1.0},
        "registry": {"uri": "artifacts/registry", "model_name": "tiny-det"},
        "pipeline_root": "artifacts/pipeline_root",
    }
    pipe_path = tmp_path / "configs" / "pipelines" / "tiny.yaml"
    _write(pipe_path, pipe)
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
