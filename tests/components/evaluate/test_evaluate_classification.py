"""The classification evaluate step: hand-computed metrics, and agreement with training."""

import json

import numpy as np
import pytest
import tensorflow as tf

from components.evaluate import run_classification
from components.evaluate.classification import (
    classification_metrics,
    confusion_matrix,
    markdown_report,
    top_k_correct,
)
from components.train import run as train
from vision_core.dataloaders import tf_example_keys as keys

NAMES = ["red", "green", "blue"]


def _write(path, n, seed):
    """Images tinted by their class colour, so a few steps already learn something."""
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            label = i % 3
            image = rng.integers(0, 80, (24, 28, 3), dtype=np.uint8)
            image[..., label] += 150
            feature = {
                keys.IMAGE_ENCODED: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])
                ),
                keys.IMAGE_CLASS_LABEL: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[label])
                ),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = root / "data"
    data.mkdir()
    _write(data / "train-00000-of-00001.tfrecord", 12, seed=0)
    _write(data / "validation-00000-of-00001.tfrecord", 7, seed=1)
    (data / "summary.json").write_text(json.dumps({"task": "classification", "class_names": NAMES}))
    overrides = [
        "task.model.input_size=[32, 32, 3]",
        "task.model.backbone.resnet.model_id=10",
        "task.model.backbone.resnet.depth_multiplier=0.25",
        "task.train_data.global_batch_size=4",
        "task.validation_data.global_batch_size=4",
        "trainer.train_steps=4",
        "trainer.validation_interval=4",
        "trainer.steps_per_loop=2",
        "trainer.optimizer_config.warmup.linear.warmup_steps=1",
    ]
    summary = train(
        str(data),
        str(root / "model"),
        str(root / "export"),
        experiment="shapes_classification",
        overrides=overrides,
    )
    return root, summary


def test_evaluate_on_the_export_matches_the_training_metric(trained, tmp_path):
    root, summary = trained
    metrics = run_classification(
        summary["export_dir"], str(root / "data"), str(tmp_path), 3, top_k=2
    )
    assert metrics["num_examples"] == 7
    # Keras' CategoricalAccuracy on parsed batches and NumPy on SavedModel outputs for the
    # encoded bytes see the same predictions.
    assert metrics["top_1_accuracy"] == pytest.approx(summary["accuracy"], abs=1e-6)
    assert metrics["top_2_accuracy"] == pytest.approx(summary["top_2_accuracy"], abs=1e-6)
    # Names come from the dataset's summary.json.
    assert {f"accuracy/{n}" for n in NAMES} <= set(metrics)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["top_1_accuracy"] == metrics["top_1_accuracy"]
    cm = np.array(json.loads((tmp_path / "confusion_matrix.json").read_text()))
    assert cm.sum() == 7 and cm.sum(axis=1).tolist() == [3, 2, 2]
    report = (tmp_path / "report.md").read_text()
    assert "| red |" in report and "top-1 accuracy" in report


def test_evaluate_rejects_wrong_class_counts(trained, tmp_path):
    root, summary = trained
    with pytest.raises(ValueError, match="class_names: 3 names given for num_classes=4"):
        run_classification(summary["export_dir"], str(root / "data"), str(tmp_path), 4, top_k=2)
    with pytest.raises(ValueError, match="top_k"):
        run_classification(summary["export_dir"], str(root / "data"), str(tmp_path), 3, top_k=4)


def test_train_refuses_a_dataset_with_another_class_count(trained, tmp_path):
    root, _ = trained
    with pytest.raises(ValueError, match="task.model.num_classes: 2, but the dataset"):
        train(
            str(root / "data"),
            str(tmp_path / "model"),
            str(tmp_path / "export"),
            experiment="shapes_classification",
            overrides=["task.model.num_classes=2", "task.evaluation.top_k=1"],
        )
    with pytest.raises(ValueError, match="converted for classification"):
        train(
            str(root / "data"),
            str(tmp_path / "model"),
            str(tmp_path / "export"),
            experiment="shapes_segmentation",
        )


def test_metrics_by_hand():
    logits = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    labels = np.array([0, 1, 1, 0])
    # Top-1: row 0 right, row 1 wrong (2), row 2 argmax 0 (tie goes to the lower id) wrong,
    # row 3 wrong -> 1/4. Top-2: row 1's label is second, row 2 ties for first, row 3's label
    # is last -> 3/4.
    assert top_k_correct(logits, labels, 2).tolist() == [True, True, True, False]
    # A tie at the k-th place counts as a hit, as in tf.math.in_top_k.
    assert top_k_correct(np.array([[0.0, 0.0, 5.0]]), np.array([0]), 2).tolist() == [True]
    metrics = classification_metrics(logits, labels, NAMES, top_k=2)
    assert metrics["top_1_accuracy"] == 0.25
    assert metrics["top_2_accuracy"] == 0.75
    assert metrics["accuracy/red"] == 0.5 and metrics["accuracy/green"] == 0.0
    assert metrics["accuracy/blue"] is None  # no blue example
    cm = confusion_matrix(labels, logits.argmax(axis=1), 3)
    assert cm.tolist() == [[1, 0, 1], [1, 0, 1], [0, 0, 0]]
    report = markdown_report(metrics, NAMES, cm, 2)
    assert "| red | 0.5000 | 2 | 2 | 0.5000 |" in report
    assert "| blue | n/a (absent) | 0 | 2 | 0.0000 |" in report
