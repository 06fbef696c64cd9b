"""Classification SavedModel export: signatures, and reloaded predictions equal the model's."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.configs import get_exp_config, load_experiment
from vision_core.dataloaders import classification_input
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.serving.export_saved_model_lib import export_inference_graph
from vision_core.tasks.factory import get_task

SIZE = 32


def _params(aug_crop):
    cfg = get_exp_config("shapes_classification")
    cfg.override(
        {
            "task": {
                "model": {
                    "input_size": [SIZE, SIZE, 3],
                    "backbone": {"resnet": {"model_id": 10, "depth_multiplier": 0.25}},
                },
                "validation_data": {"aug_crop": aug_crop},
            }
        }
    )
    return cfg


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tf_keras.utils.set_random_seed(0)
    # With the centre crop, serving must crop exactly as evaluation did.
    params = _params(aug_crop=True)
    model = get_task(params.task).build_model()
    export_dir = str(tmp_path_factory.mktemp("export") / "saved_model")
    export_inference_graph("image_bytes", None, [SIZE, SIZE], params, None, export_dir, model=model)
    return params, model, export_dir, tf.saved_model.load(export_dir)


def _images(height=40, width=48):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)


def _expected_logits(params, model, images):
    """The model on images preprocessed by the evaluation parser."""
    data = params.task.validation_data
    parser = classification_input.Parser(
        [SIZE, SIZE], num_classes=3, aug_crop=data.aug_crop, aug_rand_hflip=False
    )
    batch = tf.stack([parser.serving_fn(tf.constant(image)) for image in images])
    return model(batch, training=False).numpy()


def test_signatures_and_saved_config(exported):
    params, _, export_dir, loaded = exported
    assert {
        "serving_default",
        "serve_image_bytes",
        "serve_image_tensor",
        "serve_tf_example",
    } <= set(loaded.signatures)
    assert os.path.exists(os.path.join(export_dir, "params.yaml"))
    reloaded = load_experiment(None, [os.path.join(export_dir, "params.yaml")])
    assert reloaded.as_dict() == params.as_dict()
    outputs = loaded.signatures["serving_default"].structured_outputs
    assert set(outputs) == {"logits", "probs", "classes"}


def test_reloaded_predictions_equal_the_model(exported):
    params, model, _, loaded = exported
    images = _images()
    expected = _expected_logits(params, model, images)
    out = loaded.signatures["serve_image_tensor"](tf.constant(images))
    np.testing.assert_allclose(out["logits"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["probs"].numpy().sum(axis=1), [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(
        out["probs"].numpy(), tf.nn.softmax(expected).numpy(), rtol=1e-5, atol=1e-6
    )
    assert out["classes"].numpy().tolist() == expected.argmax(axis=1).tolist()
    assert out["classes"].dtype == tf.int32


def test_bytes_and_tf_example_inputs_agree_with_tensors(exported):
    _, _, _, loaded = exported
    images = _images()
    pngs = [tf.io.encode_png(image).numpy() for image in images]
    by_tensor = loaded.signatures["serve_image_tensor"](tf.constant(images))["logits"]
    by_bytes = loaded.signatures["serving_default"](tf.constant(pngs))["logits"]
    np.testing.assert_allclose(by_bytes.numpy(), by_tensor.numpy(), rtol=1e-5, atol=1e-5)
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    keys.IMAGE_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))
                }
            )
        ).SerializeToString()
        for png in pngs
    ]
    by_example = loaded.signatures["serve_tf_example"](tf.constant(examples))["logits"]
    np.testing.assert_allclose(by_example.numpy(), by_tensor.numpy(), rtol=1e-5, atol=1e-5)


def test_images_of_different_sizes_in_one_bytes_batch(exported):
    _, _, _, loaded = exported
    small = tf.io.encode_png(_images(20, 30)[0]).numpy()
    large = tf.io.encode_jpeg(_images(50, 36)[1]).numpy()
    out = loaded.signatures["serve_image_bytes"](tf.constant([small, large]))
    assert out["logits"].shape == (2, 3)
