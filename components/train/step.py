"""Trains a vision_core experiment on a converted dataset and exports a SavedModel."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from components.common.io import split_pattern, write_json_atomic

logger = logging.getLogger(__name__)

# The convert step's `summary.json` task → the experiment task config's `name`.
_TASK_NAMES = {
    "segmentation": "semantic_segmentation",
    "classification": "image_classification",
    "detection": "retinanet",
}


# URI schemes TensorFlow writes to directly, so checkpoints can live at the artifact's URI.
_TF_WRITABLE_SCHEMES = ("gs://",)


def checkpoint_dir_for(artifact_uri: str, artifact_path: str) -> str:
    """Where the train step keeps checkpoints: `{artifact_uri}/checkpoints` when TensorFlow can
    write that URI directly (gs://), so a retried step finds them; otherwise beside the local
    artifact files (`kfp.local`, where the path is the URI anyway)."""
    if artifact_uri and artifact_uri.startswith(_TF_WRITABLE_SCHEMES):
        return artifact_uri.rstrip("/") + "/checkpoints"
    return os.path.join(artifact_path, "checkpoints")


def check_dataset_matches(dataset_dir: str, params: Any) -> None:
    """Fails early when the converted dataset cannot train this experiment.

    Reads the convert step's `summary.json` (when there is one) and checks that it was converted
    for the experiment's task and, for classification, that it has `task.model.num_classes`
    classes (for segmentation and detection, at least as many outputs as recorded classes);
    otherwise labels beyond the logits would train silently on zero targets.

    Raises:
      ValueError: naming the mismatch and the summary file.
    """
    import tensorflow as tf

    path = os.path.join(dataset_dir, "summary.json")
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        summary = json.load(f)
    task = summary.get("task")
    expected = _TASK_NAMES.get(task or "")
    task_name = getattr(params.task, "name", None)
    if expected and task_name in _TASK_NAMES.values() and task_name != expected:
        raise ValueError(
            f"{path}: the dataset was converted for {task}, but the experiment's task is "
            f"{task_name}; convert the data for {task_name} or pick a {task} experiment"
        )
    names = summary.get("class_names")
    num_classes = params.task.model.num_classes
    if task == "classification" and names and len(names) != num_classes:
        raise ValueError(
            f"task.model.num_classes: {num_classes}, but the dataset in {dataset_dir} has "
            f"{len(names)} classes ({', '.join(names)}); set task.model.num_classes={len(names)}"
        )
    # Segmentation and detection names include the background / void class: fewer logits
    # than names would leave the last classes without an output.
    if task in ("segmentation", "detection") and names and num_classes < len(names):
        raise ValueError(
            f"task.model.num_classes: {num_classes}, but the dataset in {dataset_dir} has "
            f"{len(names)} classes including the background ({', '.join(names[:6])}"
            f"{', ...' if len(names) > 6 else ''}); set task.model.num_classes={len(names)}"
        )


def dataset_class_names(dataset_dir: str, params: Any) -> list[str] | None:
    """The converted dataset's class names in model id order, if it recorded them.

    Detection and segmentation models also have the background as class 0; when the dataset
    lists only the objects, "background" is put first.
    """
    import tensorflow as tf

    path = os.path.join(dataset_dir, "summary.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        names = json.load(f).get("class_names")
    if not names:
        return None
    names = list(names)
    if len(names) == params.task.model.num_classes - 1:
        names = ["background", *names]
    return names if len(names) == params.task.model.num_classes else None


def run(
    dataset_dir: str,
    model_dir: str,
    export_dir: str,
    experiment: str | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    mode: str = "train_and_eval",
    progress=None,
) -> dict[str, Any]:
    """Trains from a config on `dataset_dir`'s train/validation shards and exports the model.

    Args:
      dataset_dir: output folder of the convert step (`train-*-of-*.tfrecord`, ...).
      model_dir: checkpoints and summaries; training resumes from here if it holds a checkpoint,
        so a retried step continues where it stopped.
      export_dir: where the SavedModel (image-bytes signature) is written; must not exist yet.
      experiment: registered experiment name (a YAML's `experiment:` key also works).
      config_file: YAML experiment config.
      overrides: nested dict or `dotted.key=value` strings, applied last.

    Returns:
      A summary: steps, final training/validation metrics, paths, config hash.
    """
    from vision_core.configs import load_experiment
    from vision_core.hyperparams import parse_dotted
    from vision_core.serving.export_saved_model_lib import export_inference_graph
    from vision_core.training.trainer import run_experiment

    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = parse_dotted(list(overrides))
    params = load_experiment(experiment, [config_file] if config_file else [], overrides)
    data = {
        "task": {
            "train_data": {"input_path": split_pattern(dataset_dir, "train")},
            "validation_data": {"input_path": split_pattern(dataset_dir, "validation")},
        }
    }
    params.override(data)
    if overrides:  # Explicit overrides win over the dataset defaults.
        params.override(dict(overrides))
    check_dataset_matches(dataset_dir, params)
    result = run_experiment(params, model_dir, mode=mode, progress=progress)
    export_inference_graph(
        input_type="image_bytes",
        batch_size=None,
        input_image_size=list(params.task.model.input_size[:2]),
        params=params,
        checkpoint_path=model_dir,
        export_dir=export_dir,
        class_names=dataset_class_names(dataset_dir, params),
    )
    summary = {
        "model_dir": model_dir,
        "export_dir": export_dir,
        "config_hash": params.fingerprint(),
        "num_classes": params.task.model.num_classes,
        **{k: v for k, v in result.items() if isinstance(v, int | float | str)},
    }
    write_json_atomic(os.path.join(model_dir, "train_summary.json"), summary)
    return summary
