"""The classification pipeline: config checks, compiling, and a tiny run under kfp.local."""

import os
import sys

import pytest
import yaml

from components.registry import open_registry
from pipelines.cli import main as cli_main
from pipelines.config import PROJECT_ROOT, load_pipeline_config
from pipelines.local_run import run_local

sys.path.insert(0, os.path.dirname(__file__))
from tiny_pipeline import write_tiny_pipeline, write_yaml  # noqa: E402

# Compiling for a cluster needs an image it can pull.
IMAGE = "registry.example/vision-pipelines:test"

SHAPES_CLASSIFICATION = f"{PROJECT_ROOT}/configs/pipelines/shapes_classification.yaml"


def test_shapes_classification_compiles_with_the_accuracy_evaluator(tmp_path):
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", SHAPES_CLASSIFICATION, "-o", str(out), "--image", IMAGE]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert {
        "convert-dataset-op",
        "train-op",
        "evaluate-op",
        "validate-op",
    } <= set(tasks)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gate_metric"]["defaultValue"] == "top_1_accuracy"
    assert params["num_classes"]["defaultValue"] == 3
    assert params["evaluate_options"]["defaultValue"] == {"top_k": 2}
    evaluate_inputs = tasks["evaluate-op"]["inputs"]["parameters"]
    assert evaluate_inputs["task"]["runtimeValue"]["constant"] == "classification"
    assert params["class_names"]["defaultValue"] == ["circle", "square", "triangle"]
    convert_inputs = tasks["convert-dataset-op"]["inputs"]["parameters"]
    assert convert_inputs["task"]["runtimeValue"]["constant"] == "classification"
    exp = yaml.safe_load(params["experiment_yaml"]["defaultValue"])
    assert exp["task"]["name"] == "image_classification"


def test_gate_metric_and_experiment_must_fit_the_task(tmp_path, capsys):
    bad_gate = tmp_path / "configs" / "pipelines" / "g.yaml"
    write_yaml(bad_gate, {"task": "classification"})
    assert cli_main(["run", str(bad_gate)]) == 2
    err = capsys.readouterr().err
    assert "gate.metric: 'mean_iou' is not reported by classification evaluation" in err
    assert "top_1_accuracy" in err

    mismatch = tmp_path / "configs" / "pipelines" / "m.yaml"
    write_yaml(
        mismatch,
        {
            "task": "classification",
            "gate": {"metric": "top_1_accuracy"},
            "experiment": {"name": "shapes_segmentation"},
        },
    )
    assert cli_main(["run", str(mismatch)]) == 2
    err = capsys.readouterr().err
    assert "pipeline task is 'classification'" in err and "semantic_segmentation" in err
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_classification_pipeline_runs_end_to_end(tmp_path, capsys):
    exp = {
        "experiment": "shapes_classification",
        "task": {
            "model": {
                "input_size": [32, 32, 3],
                "backbone": {"type": "resnet", "resnet": {"model_id": 10}},
            },
            "train_data": {"global_batch_size": 4},
            "validation_data": {"global_batch_size": 4},
        },
    }
    pipe_path = write_tiny_pipeline(
        tmp_path,
        exp,
        name="tiny-cls",
        task="classification",
        gate_metric="top_1_accuracy",
        num_validation=5,
        seed=2,
        pipeline_root="artifacts/pipeline_root",
    )
    config = load_pipeline_config(str(pipe_path))

    summary = run_local(config)
    metrics = summary["metrics"]
    assert metrics["num_examples"] == 5
    assert 0.0 <= metrics["top_1_accuracy"] <= metrics["top_2_accuracy"] <= 1.0
    assert {k for k in metrics if k.startswith("accuracy/")} == {
        "accuracy/circle",
        "accuracy/square",
        "accuracy/triangle",
    }
    assert summary["gate"]["passed"] is True
    assert summary["registry"]["version"] == 1
    registry = open_registry(config.registry.uri)
    assert registry.get_alias("tiny-cls", "champion") == 1
    record = registry.get_version("tiny-cls", 1)
    assert record.metrics["top_1_accuracy"] == metrics["top_1_accuracy"]
    assert record.lineage["dataset_fingerprint"]
    with open(summary["report"]) as f:
        report = f.read()
    assert "| circle |" in report and "top-1 accuracy" in report

    # The summary the CLI prints shows accuracy, not IoU.
    code = cli_main(["run", str(pipe_path), "--set", "gate.min_value=1.5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1 accuracy" in printed and "accuracy circle" in printed
    assert "held back" in printed and "mean IoU" not in printed
    assert [v.version for v in registry.list_versions("tiny-cls")] == [1]


def test_summary_format_for_classification():
    from pipelines.cli import format_summary

    config = load_pipeline_config(SHAPES_CLASSIFICATION)
    text = format_summary(
        {
            "wall_seconds": 1.0,
            "metrics": {
                "num_examples": 4,
                "top_1_accuracy": 0.75,
                "top_2_accuracy": 1.0,
                "accuracy/circle": 0.5,
                "accuracy/square": None,
            },
            "gate": {"passed": True, "reason": "ok"},
            "registry": {"uri": "r", "model_name": "m", "version": 2},
        },
        config,
    )
    assert "top-1 accuracy  0.7500" in text and "top-2 accuracy  1.0000" in text
    assert "accuracy circle      0.5000" in text and "accuracy square      absent" in text
