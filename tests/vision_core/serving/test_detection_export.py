"""Detection SavedModel: export, reload, boxes in original-image pixels; `predict` draws them."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.cli import main as cli_main
from vision_core.configs import get_exp_config
from vision_core.ops import anchor, preprocess_ops
from vision_core.serving.export_saved_model_lib import export_inference_graph
from vision_core.tasks.factory import get_task

TINY = {
    "task": {
        "model": {
            "input_size": [64, 64, 3],
            "backbone": {"resnet": {"model_id": 10, "depth_multiplier": 0.25}},
            "decoder": {"fpn": {"num_filters": 16}},
            "head": {"num_convs": 1, "num_filters": 16},
            # Keep every candidate so the exported and direct outputs line up one to one.
            "detection_generator": {"pre_nms_score_threshold": 0.0, "max_num_detections": 10},
        }
    }
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    params = get_exp_config("shapes_retinanet")
    params.override(TINY)
    model = get_task(params.task).build_model()
    export_dir = str(tmp_path_factory.mktemp("det") / "saved_model")
    export_inference_graph(
        "image_bytes",
        None,
        [64, 64],
        params,
        None,
        export_dir,
        model=model,
        class_names=["background", "circle", "square", "triangle"],
    )
    return params, model, export_dir


def _png(height, width, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return image, buffer.getvalue()


def test_served_boxes_are_the_model_boxes_in_original_pixels(exported):
    params, model, export_dir = exported
    loaded = tf.saved_model.load(export_dir)
    assert {"serving_default", "serve_image_bytes", "serve_image_tensor", "serve_tf_example"} <= (
        set(loaded.signatures)
    )
    image, encoded = _png(50, 80)
    served = loaded.signatures["serve_image_bytes"](tf.constant([encoded]))
    assert served["detection_boxes"].shape == (1, 10, 4)
    assert served["num_detections"].dtype == tf.int32

    # The same computation by hand: resize into 64x64 (scale 0.8 -> 40x64), pad, run, rescale.
    normalized = preprocess_ops.normalize_image(tf.constant(image))
    padded, info = preprocess_ops.resize_and_crop_image(normalized, [64, 64], [64, 64])
    anchors = anchor.build_anchor_generator(3, 5, 3, [0.5, 1.0, 2.0], 3.0)([64, 64])
    direct = model(
        padded[None],
        image_shape=info[None, 1, :],
        anchor_boxes={k: v[None] for k, v in anchors.items()},
        training=False,
    )
    n = int(served["num_detections"][0])
    assert n == int(direct["num_detections"][0]) > 0
    expected = direct["detection_boxes"][0, :n].numpy() / np.tile(info[2].numpy(), 2)
    expected = np.clip(expected, 0, [50, 80, 50, 80])
    np.testing.assert_allclose(served["detection_boxes"][0, :n].numpy(), expected, atol=1e-3)
    np.testing.assert_allclose(
        served["detection_scores"][0, :n].numpy(), direct["detection_scores"][0, :n], atol=1e-5
    )
    boxes = served["detection_boxes"][0, :n].numpy()
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 50).all() and (boxes[:, [1, 3]] <= 80).all()


def test_predict_cli_draws_detections(exported, tmp_path, capsys):
    _, _, export_dir = exported
    image_path = tmp_path / "cat.png"
    image_path.write_bytes(_png(50, 80, seed=3)[1])
    out = tmp_path / "out"
    assert (
        cli_main(["predict", export_dir, str(image_path), "--output", str(out), "--min-score", "0"])
        == 0
    )
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["output"] == str(out / "cat.png")
    drawn = np.asarray(Image.open(out / "cat.png"))
    assert drawn.shape == (50, 80, 3)
    assert record["detections"] and record["detections"][0]["class"] in {
        "background", "circle", "square", "triangle"
    }  # fmt: skip


def test_predict_rejects_a_non_image_and_a_non_model(exported, tmp_path, capsys):
    _, _, export_dir = exported
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert cli_main(["predict", export_dir, str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "notes.png: not a readable image" in capsys.readouterr().err
    assert cli_main(["predict", str(tmp_path), str(bad)]) == 2
    assert "no SavedModel here" in capsys.readouterr().err
