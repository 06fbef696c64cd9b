"""Tests for vision_core.dataloaders.tf_example_decoder (Model Garden's decoder contract)."""

import numpy as np
import pytest
import tensorflow as tf

from vision_core.dataloaders import tf_example_keys as keys
from vision_core.dataloaders.tf_example_decoder import TfExampleDecoder


def _bytes(*values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(*values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(*values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _png(array):
    return tf.io.encode_png(tf.constant(array, tf.uint8)).numpy()


def _example(with_size=True, with_area=True, with_crowd=True, source_id=b"42", masks=None):
    image = np.zeros([4, 6, 3], np.uint8)
    image[1, 2] = [10, 20, 30]
    feature = {
        keys.IMAGE_ENCODED: _bytes(_png(image)),
        keys.IMAGE_SOURCE_ID: _bytes(source_id),
        keys.OBJECT_BBOX_YMIN: _floats(0.0, 0.5),
        keys.OBJECT_BBOX_XMIN: _floats(0.0, 0.5),
        keys.OBJECT_BBOX_YMAX: _floats(0.5, 1.0),
        keys.OBJECT_BBOX_XMAX: _floats(0.5, 0.75),
        keys.OBJECT_CLASS_LABEL: _ints(3, 7),
    }
    if with_size:
        feature[keys.IMAGE_HEIGHT] = _ints(4)
        feature[keys.IMAGE_WIDTH] = _ints(6)
    if with_area:
        feature[keys.OBJECT_AREA] = _floats(5.0, 6.0)
    if with_crowd:
        feature[keys.OBJECT_IS_CROWD] = _ints(0, 1)
    if masks is not None:
        feature[keys.OBJECT_MASK] = _bytes(*[_png(m[..., None]) for m in masks])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_decodes_model_garden_fields():
    out = TfExampleDecoder().decode(tf.constant(_example()))
    assert out["source_id"].numpy() == b"42"
    assert out["image"].shape == (4, 6, 3) and out["image"].dtype == tf.uint8
    np.testing.assert_array_equal(out["image"].numpy()[1, 2], [10, 20, 30])
    assert (int(out["height"]), int(out["width"])) == (4, 6)
    np.testing.assert_allclose(
        out["groundtruth_boxes"].numpy(), [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 0.75]]
    )
    np.testing.assert_array_equal(out["groundtruth_classes"].numpy(), [3, 7])
    np.testing.assert_array_equal(out["groundtruth_is_crowd"].numpy(), [False, True])
    np.testing.assert_allclose(out["groundtruth_area"].numpy(), [5.0, 6.0])
    assert "groundtruth_instance_masks" not in out


def test_defaults_when_optional_features_are_missing():
    out = TfExampleDecoder().decode(
        tf.constant(_example(with_size=False, with_area=False, with_crowd=False, source_id=b""))
    )
    # Size from the decoded image; area = box area in pixels: 0.5*0.5*4*6 and 0.25*0.5*4*6.
    assert (int(out["height"]), int(out["width"])) == (4, 6)
    np.testing.assert_allclose(out["groundtruth_area"].numpy(), [6.0, 3.0])
    np.testing.assert_array_equal(out["groundtruth_is_crowd"].numpy(), [False, False])
    # Empty source id: a hash of the encoded image, below 2**22 so float32 holds it exactly.
    generated = int(out["source_id"].numpy())
    assert 0 <= generated < 2**22
    again = TfExampleDecoder(regenerate_source_id=True).decode(tf.constant(_example()))
    assert int(again["source_id"].numpy()) == generated


def test_instance_masks_and_binarization():
    m1 = np.zeros([4, 6], np.uint8)
    m1[:2, :3] = 255
    m2 = np.full([4, 6], 100, np.uint8)
    serialized = tf.constant(_example(masks=[m1, m2]))
    out = TfExampleDecoder(include_mask=True).decode(serialized)
    masks = out["groundtruth_instance_masks"].numpy()
    assert masks.shape == (2, 4, 6) and masks.dtype == np.float32
    np.testing.assert_array_equal(masks[0], m1.astype(np.float32))
    np.testing.assert_array_equal(masks[1], 100.0)
    assert out["groundtruth_instance_masks_png"].shape == (2,)
    binary = TfExampleDecoder(include_mask=True, mask_binarize_threshold=127).decode(serialized)
    np.testing.assert_array_equal(binary["groundtruth_instance_masks"].numpy()[1], 0.0)
    np.testing.assert_array_equal(binary["groundtruth_instance_masks"].numpy()[0], m1 / 255)


def test_no_instance_masks_gives_empty_tensor_of_image_size():
    out = TfExampleDecoder(include_mask=True).decode(tf.constant(_example()))
    assert out["groundtruth_instance_masks"].shape == (0, 4, 6)


def test_missing_source_id_feature_is_an_error_unless_regenerated():
    feature = {keys.IMAGE_ENCODED: _bytes(_png(np.zeros([2, 2, 3], np.uint8)))}
    serialized = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError):
        TfExampleDecoder().decode(tf.constant(serialized))
    out = TfExampleDecoder(regenerate_source_id=True).decode(tf.constant(serialized))
    assert out["groundtruth_boxes"].shape == (0, 4)


def test_attributes_are_decoded_per_object():
    feature = {
        keys.IMAGE_ENCODED: _bytes(_png(np.zeros([2, 2, 3], np.uint8))),
        keys.IMAGE_SOURCE_ID: _bytes(b"1"),
        keys.OBJECT_CLASS_LABEL: _ints(1, 2),
        keys.OBJECT_ATTRIBUTE_PREFIX + "depth": _ints(5, 9),
    }
    serialized = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    out = TfExampleDecoder(attribute_names=["depth", "pose"]).decode(tf.constant(serialized))
    # Model Garden's form: one [N, 1] int64 tensor per attribute; a missing one is empty.
    np.testing.assert_array_equal(out["groundtruth_attributes"]["depth"].numpy(), [[5], [9]])
    assert out["groundtruth_attributes"]["pose"].shape == (0, 1)
    assert "groundtruth_attributes" not in TfExampleDecoder().decode(tf.constant(serialized))
