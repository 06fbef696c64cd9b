"""Tiny experiment + pipeline configs for the end-to-end tests, written under a tmp folder the
way a user lays out a project (configs/experiments, configs/pipelines, artifacts/)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# Four steps of batch 4, evaluated and checkpointed along the way: enough to exercise every
# step of the graph in about a minute.
TINY_TRAINER = {
    "train_steps": 4,
    "validation_interval": 4,
    "steps_per_loop": 2,
    "checkpoint_interval": 2,
    "optimizer_config": {
        "learning_rate": {"cosine": {"decay_steps": 4}},
        "warmup": {"linear": {"warmup_steps": 1}},
    },
}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def write_tiny_pipeline(
    tmp_path: Path,
    experiment: dict[str, Any],
    name: str,
    task: str,
    gate_metric: str,
    num_validation: int,
    seed: int,
    **pipeline: Any,
) -> Path:
    """Writes configs/experiments/tiny.yaml (with TINY_TRAINER) and configs/pipelines/tiny.yaml
    for a shapes pipeline of 8 training images at 64x64; returns the pipeline config's path."""
    experiment = copy.deepcopy(experiment)
    experiment.setdefault("trainer", copy.deepcopy(TINY_TRAINER))
    write_yaml(tmp_path / "configs" / "experiments" / "tiny.yaml", experiment)
    config = {
        "name": name,
        "task": task,
        "dataset": {
            "source": "shapes",
            "shapes": {
                "num_train": 8,
                "num_validation": num_validation,
                "image_size": [64, 64],
                "seed": seed,
            },
            "num_shards": 2,
        },
        "experiment": {"config_file": "configs/experiments/tiny.yaml"},
        "gate": {"metric": gate_metric, "min_value": 0.0, "max_regression": 1.0},
        "registry": {"uri": "artifacts/registry", "model_name": name},
        "pipeline_root": "artifacts/root",
    }
    config.update(pipeline)
    return write_yaml(tmp_path / "configs" / "pipelines" / "tiny.yaml", config)
