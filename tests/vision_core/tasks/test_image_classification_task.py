"""ImageClassificationTask: losses and metrics against hand-computed values, model and inputs."""

import math

import numpy as np
import pytest
import tensorflow as tf

from vision_core.configs import get_exp_config
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.tasks.factory import get_task
from vision_core.tasks.image_classification import ImageClassificationTask

LOGITS = tf.constant([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 2.0, 0.0]])
LABELS = tf.constant([0, 1, 1])


def _task(**losses):
    cfg = get_exp_config("image_classification")
    cfg.override({"task": {"model": {"num_classes": 3}, "evaluation": {"top_k": 2}}})
    cfg.override({"task": {"losses": losses}})
    return ImageClassificationTask(cfg.task)


def _log_softmax(row):
    row = np.asarray(row, np.float64)
    return row - math.log(np.exp(row).sum())


def _expected_ce(smoothing=0.0):
    total = 0.0
    for row, label in zip(LOGITS.numpy(), LABELS.numpy()):
        target = np.full(3, smoothing / 3)
        target[label] += 1.0 - smoothing
        total += -(target * _log_softmax(row)).sum()
    return total / 3


def test_factory_picks_the_classification_task():
    cfg = get_exp_config("shapes_classification")
    assert isinstance(get_task(cfg.task), ImageClassificationTask)


def test_cross_entropy_by_hand():
    # -log(e^2 / (e^2 + 2)) = 0.2395, -log(e / (1 + e + e^3)) = 2.1698,
    # -log(e^2 / (e + e^2 + 1)) = 0.4076; their mean is 0.9390.
    loss = _task().build_losses(LABELS, LOGITS)
    assert float(loss) == pytest.approx(_expected_ce(), rel=1e-6)
    assert float(loss) == pytest.approx(0.9390, abs=1e-4)


def test_label_smoothing_by_hand():
    loss = _task(label_smoothing=0.3).build_losses(LABELS, LOGITS)
    # Targets become 0.7 * one_hot + 0.1 for every class.
    assert float(loss) == pytest.approx(_expected_ce(0.3), rel=1e-6)


def test_sparse_and_soft_labels_agree_with_one_hot():
    sparse = _task(one_hot=False).build_losses(LABELS, LOGITS)
    assert float(sparse) == pytest.approx(_expected_ce(), rel=1e-6)
    soft_task = _task(one_hot=False, soft_labels=True)
    soft = soft_task.build_losses(tf.one_hot(LABELS, 3), LOGITS)
    assert float(soft) == pytest.approx(_expected_ce(), rel=1e-6)
    # Integer labels are one-hot encoded for soft-label losses too.
    assert float(soft_task.build_losses(LABELS, LOGITS)) == pytest.approx(float(soft))
    # A real soft target: half class 0, half class 1 on row 0 only.
    one = soft_task.build_losses(tf.constant([[0.5, 0.5, 0.0]]), LOGITS[:1])
    expected = -(0.5 * _log_softmax([2, 0, 0])[0] + 0.5 * _log_softmax([2, 0, 0])[1])
    assert float(one) == pytest.approx(expected, rel=1e-6)


def test_loss_weight_scales_the_regularization_too():
    loss = _task(loss_weight=2.0).build_losses(LABELS, LOGITS, aux_losses=[tf.constant(0.5)])
    assert float(loss) == pytest.approx(2.0 * (_expected_ce() + 0.5), rel=1e-6)


@pytest.mark.parametrize("one_hot", [True, False])
def test_top1_and_topk_accuracy_by_hand(one_hot):
    # Top-1: row 0 right (class 0), row 1 wrong (predicts 2), row 2 right (1) -> 2/3.
    # Top-2: row 1's label (logit 1.0) is second -> 3/3.
    task = _task(one_hot=one_hot)
    metrics = task.build_metrics(training=False)
    assert [m.name for m in metrics] == ["accuracy", "top_2_accuracy"]
    for metric in metrics:
        task.update_metric(metric, LABELS, LOGITS)
    result = task.summarize_metrics(metrics)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["top_2_accuracy"] == pytest.approx(1.0)


def test_model_and_inputs_from_the_config(tmp_path):
    path = tmp_path / "train.tfrecord"
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(6):
            png = tf.io.encode_png(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).numpy()
            feature = {
                keys.IMAGE_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                keys.IMAGE_CLASS_LABEL: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[i % 3])
                ),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    cfg = get_exp_config("shapes_classification")
    cfg.override(
        {
            "task": {
                "model": {
                    "input_size": [32, 32, 3],
                    "backbone": {"resnet": {"model_id": 10, "depth_multiplier": 0.25}},
                },
                "freeze_backbone": True,
                "validation_data": {"input_path": str(path), "global_batch_size": 4},
            }
        }
    )
    task = get_task(cfg.task)
    model = task.build_model()
    # A frozen backbone leaves only the logits layer to train.
    assert [v.name.split("/")[-1] for v in model.trainable_variables] == ["kernel:0", "bias:0"]
    batches = list(task.build_inputs(cfg.task.validation_data))
    assert [b[0].shape[0] for b in batches] == [4, 2]  # evaluation keeps the remainder
    assert batches[0][0].shape[1:] == (32, 32, 3)
    assert batches[0][1].numpy().tolist() == [0, 1, 2, 0]
    logs = task.validation_step(batches[0], model, metrics=task.build_metrics(False))
    assert np.isfinite(float(logs["loss"]))
