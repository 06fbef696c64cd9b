"""The train step's SavedModel serves raw images, and the evaluate step agrees with training."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components.evaluate import run as evaluate
from components.evaluate.step import confusion_matrix, iou_from_confusion
from components.train import run as train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, square_records):
    root = tmp_path_factory.mktemp("run")
    data = root / "data"
    data.mkdir()
    square_records(str(data / "train-00000-of-00001.tfrecord"), n=8, seed=0)
    square_records(str(data / "validation-00000-of-00001.tfrecord"), n=4, seed=1)
    overrides = [
        "task.model.num_classes=2",
        "task.model.input_size=[32, 32, 3]",
        "task.model.backbone.resnet.model_id=10",
        "task.model.backbone.resnet.depth_multiplier=0.25",
        "task.model.decoder.fpn.num_filters=32",
        "task.model.head.num_filters=32",
        "task.model.head.num_decoder_filters=32",
        "task.train_data.global_batch_size=4",
        "task.train_data.output_size=[32, 32]",
        "task.validation_data.output_size=[32, 32]",
        "task.validation_data.global_batch_size=4",
        "trainer.train_steps=6",
        "trainer.validation_interval=6",
        "trainer.steps_per_loop=3",
    ]
    summary = train(
        str(data),
        str(root / "model"),
        str(root / "export"),
        experiment="shapes_segmentation_resnet_fpn",
        overrides=overrides,
    )
    return root, summary


def test_export_has_serving_signatures_and_config(trained):
    root, summary = trained
    export = summary["export_dir"]
    assert os.path.exists(os.path.join(export, "saved_model.pb"))
    assert os.path.exists(os.path.join(export, "params.yaml"))
    loaded = tf.saved_model.load(export)
    assert {
        "serving_default",
        "serve_image_bytes",
        "serve_image_tensor",
        "serve_tf_example",
    } <= set(loaded.signatures)
    # Encoded bytes of a non-square image come back as a mask of the original size.
    image = np.full((40, 24, 3), 200, np.uint8)
    out = loaded.signatures["serving_default"](tf.constant([tf.io.encode_png(image).numpy()]))
    assert out["predicted_mask"].shape == (1, 40, 24)
    assert out["logits"].shape == (1, 32, 32, 2)
    assert out["image_info"].numpy()[0, 0].tolist() == [40.0, 24.0]
    # The tensor signature agrees with the bytes signature on the same pixels.
    out2 = loaded.signatures["serve_image_tensor"](tf.constant(image[None]))
    np.testing.assert_array_equal(out["predicted_mask"], out2["predicted_mask"])


def test_no_temporary_export_folders_left(trained):
    root, _ = trained
    assert not [p for p in os.listdir(root) if p.startswith(".export-")]


def test_evaluate_on_the_export_matches_the_training_metric(trained, tmp_path):
    root, summary = trained
    metrics = evaluate(
        summary["export_dir"], str(root / "data"), str(tmp_path), 2, ["background", "square"]
    )
    assert metrics["num_examples"] == 4
    # The trainer's PerClassIoU (TF, on parsed batches) and the evaluate step (NumPy, on the
    # SavedModel fed with encoded bytes) measure the same predictions.
    assert metrics["mean_iou"] == pytest.approx(summary["mean_iou"], abs=1e-4)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["iou/square"] == metrics["iou/square"]
    report = (tmp_path / "report.md").read_text()
    assert "| square |" in report and "mean IoU" in report


def test_train_refuses_an_existing_export(trained):
    root, _ = trained
    with pytest.raises(FileExistsError, match="export_dir"):
        from vision_core.configs import load_experiment
        from vision_core.serving.export_saved_model_lib import export_inference_graph

        params = load_experiment(None, [str(root / "model" / "params.yaml")])
        export_inference_graph(
            "image_bytes", None, [32, 32], params, str(root / "model"), str(root / "export")
        )


def test_confusion_matrix_iou_by_hand():
    gt = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])
    cm = confusion_matrix(gt, pred, 2, 255)
    assert cm.tolist() == [[2, 1], [1, 3]]  # the 255 pixel is ignored
    stats = iou_from_confusion(cm)
    # class 0: tp 2 / (2 + 1 + 1); class 1: tp 3 / (3 + 1 + 1)
    assert stats["per_class_iou"].tolist() == pytest.approx([0.5, 0.6])
    assert stats["mean_iou"] == pytest.approx(0.55)
