"""Tests for vision_core.dataloaders.segmentation_input on TFRecords written here.

Images encode their own coordinates (R = 8 * column, G = 8 * row) and masks are a function of
the column, so after any flip or crop the mask at a pixel can be checked against the image there.
"""

import numpy as np
import pytest
import tensorflow as tf

from vision_core.dataloaders import segmentation_input
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.ops import preprocess_ops


def _mask_of_columns(cols):
    return (cols // 4) % 3


def _example(height, width, with_size=True, mask_shape=None):
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([xs * 8, ys * 8, np.full_like(xs, 50)], -1).astype(np.uint8)
    mask = _mask_of_columns(xs).astype(np.uint8)[..., None]
    if mask_shape is not None:
        mask = np.zeros(mask_shape + (1,), np.uint8)
    feature = {
        keys.IMAGE_ENCODED: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])
        ),
        keys.SEGMENTATION_CLASS_ENCODED: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[tf.io.encode_png(mask).numpy()])
        ),
    }
    if with_size:
        feature[keys.IMAGE_HEIGHT] = tf.train.Feature(int64_list=tf.train.Int64List(value=[height]))
        feature[keys.IMAGE_WIDTH] = tf.train.Feature(int64_list=tf.train.Int64List(value=[width]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for e in examples:
            writer.write(e)
    return str(path)


def _raw(image):
    """Undoes the ImageNet normalization back to [0, 255] pixel values."""
    mean = np.array(preprocess_ops.MEAN_RGB)
    std = np.array(preprocess_ops.STDDEV_RGB)
    return np.round(np.asarray(image, np.float64) * std + mean)


def _parse(parser, serialized, training):
    decoded = segmentation_input.Decoder().decode(tf.constant(serialized))
    image, labels = parser.parse_fn(training)(decoded)
    return image.numpy(), {k: v.numpy() for k, v in labels.items()}


def _assert_mask_follows_image(image, labels, rows=None, cols=None):
    raw = _raw(image)
    rows = slice(None) if rows is None else rows
    cols = slice(None) if cols is None else cols
    source_cols = (raw[rows, cols, 0] / 8).astype(int)
    np.testing.assert_array_equal(labels["masks"][rows, cols, 0], _mask_of_columns(source_cols))


def test_training_shapes_and_mask_follows_image_under_flip(tmp_path):
    tf.random.set_seed(1)
    parser = segmentation_input.Parser(output_size=[16, 24], aug_rand_hflip=True)
    dataset = tf.data.TFRecordDataset(_write(tmp_path / "t", [_example(16, 24)] * 8))
    dataset = dataset.map(segmentation_input.Decoder().decode).map(parser.parse_fn(True))
    flipped = []
    for image, labels in dataset:
        image, labels = image.numpy(), {k: v.numpy() for k, v in labels.items()}
        assert image.shape == (16, 24, 3) and image.dtype == np.float32
        assert labels["masks"].shape == (16, 24, 1) and labels["masks"].dtype == np.float32
        assert labels["valid_masks"].shape == (16, 24, 1) and labels["valid_masks"].all()
        np.testing.assert_allclose(labels["image_info"], [[16, 24], [16, 24], [1, 1], [0, 0]])
        _assert_mask_follows_image(image, labels)
        flipped.append(_raw(image)[0, 0, 0] == 8 * 23)
    # Both outcomes of the coin occur, so the check above covered flipped examples.
    assert any(flipped) and not all(flipped)


def test_padding_is_filled_with_ignore_label():
    parser = segmentation_input.Parser(output_size=[32, 32], ignore_label=7)
    image, labels = _parse(parser, _example(20, 30), training=False)
    # Scale 16/15 (see test_preprocess_ops): content is 21 x 32, rows 21.. are padding.
    assert image.shape == (32, 32, 3)
    masks, valid = labels["masks"][..., 0], labels["valid_masks"][..., 0]
    np.testing.assert_array_equal(masks[21:], 7)
    assert not valid[21:].any()
    assert valid[:21].all()
    assert set(np.unique(masks[:21])) <= {0, 1, 2}


def test_random_crop_follows_image_and_pads_with_ignore_label():
    tf.random.set_seed(2)
    small = segmentation_input.Parser(output_size=[16, 24], crop_size=[8, 8])
    image, labels = _parse(small, _example(16, 24), training=True)
    assert image.shape == (8, 8, 3) and labels["masks"].shape == (8, 8, 1)
    _assert_mask_follows_image(image, labels)

    large = segmentation_input.Parser(output_size=[16, 24], crop_size=[20, 20])
    image, labels = _parse(large, _example(16, 24), training=True)
    assert labels["masks"].shape == (20, 20, 1)
    np.testing.assert_array_equal(labels["masks"][16:], 255)
    assert not labels["valid_masks"][16:].any()
    _assert_mask_follows_image(image, labels, rows=slice(0, 16))


def test_scale_jitter_keeps_correspondence_on_valid_pixels():
    tf.random.set_seed(4)
    parser = segmentation_input.Parser(
        output_size=[16, 24], aug_scale_min=1.5, aug_scale_max=2.0, aug_rand_hflip=True
    )
    image, labels = _parse(parser, _example(16, 24), training=True)
    assert image.shape == (16, 24, 3)
    info = labels["image_info"]
    assert info[2, 0] >= 1.5 and info[2, 0] <= 2.0
    # The bilinear image holds a continuous source column v; the nearest-neighbour mask took
    # column round(v). Skip pixels where v is close to a half-integer (either neighbour).
    mean, std = preprocess_ops.MEAN_RGB[0], preprocess_ops.STDDEV_RGB[0]
    v = (image[..., 0].astype(np.float64) * std + mean) / 8
    certain = (np.abs(v - np.floor(v) - 0.5) > 0.1) & labels["valid_masks"][..., 0]
    assert certain.sum() > 100
    cols = np.round(v).astype(int)
    np.testing.assert_array_equal(labels["masks"][..., 0][certain], _mask_of_columns(cols)[certain])


def test_eval_keeps_full_size_groundtruth_when_not_resizing():
    parser = segmentation_input.Parser(
        output_size=[32, 32], resize_eval_groundtruth=False, groundtruth_padded_size=[24, 36]
    )
    image, labels = _parse(parser, _example(20, 30), training=False)
    assert image.shape == (32, 32, 3)
    masks = labels["masks"][..., 0]
    assert masks.shape == (24, 36)
    cols = np.broadcast_to(np.arange(30), (20, 30))
    np.testing.assert_array_equal(masks[:20, :30], _mask_of_columns(cols))
    np.testing.assert_array_equal(masks[20:], 255)
    np.testing.assert_array_equal(masks[:, 30:], 255)
    np.testing.assert_allclose(labels["image_info"][2], [21 / 20, 32 / 30], rtol=1e-6)


def test_eval_resizes_groundtruth_by_default():
    parser = segmentation_input.Parser(output_size=[32, 48])
    image, labels = _parse(parser, _example(16, 24), training=False)
    # Exact 2x: mask pixel (y, x) comes from column x // 2.
    cols = np.broadcast_to(np.arange(48) // 2, (32, 48))
    np.testing.assert_array_equal(labels["masks"][..., 0], _mask_of_columns(cols))


def test_not_preserving_aspect_ratio_stretches_without_padding():
    parser = segmentation_input.Parser(output_size=[32, 32], preserve_aspect_ratio=False)
    image, labels = _parse(parser, _example(20, 30), training=False)
    assert image.shape == (32, 32, 3)
    assert labels["valid_masks"].all()


def test_missing_height_width_and_dtype():
    parser = segmentation_input.Parser(output_size=[16, 24], dtype="bfloat16")
    image, labels = _parse(parser, _example(16, 24, with_size=False), training=False)
    assert image.dtype == tf.bfloat16.as_numpy_dtype
    assert labels["valid_masks"].all()


def test_mask_size_mismatch_is_reported():
    parser = segmentation_input.Parser(output_size=[16, 24])
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask size differs"):
        _parse(parser, _example(16, 24, mask_shape=(8, 8)), training=False)


def test_groundtruth_padded_size_required_without_resize():
    with pytest.raises(ValueError, match="groundtruth_padded_size"):
        segmentation_input.Parser(output_size=[16, 16], resize_eval_groundtruth=False)


def test_segmentation_input_make_dataset(tmp_path):
    path = _write(tmp_path / "train-00000-of-00001.tfrecord", [_example(20, 30)] * 5)
    train = segmentation_input.SegmentationInput(
        file_pattern=str(tmp_path / "train-*-of-*.tfrecord"),
        is_training=True,
        batch_size=2,
        input_size=(32, 32, 3),
        aug_scale_min=0.75,
        aug_scale_max=1.25,
        seed=3,
    )
    assert train.files == [path]
    batches = list(train.make_dataset())
    assert len(batches) == 2  # finite, last partial batch dropped
    images, labels = batches[0]
    assert images.shape == (2, 32, 32, 3)
    assert labels["masks"].shape == (2, 32, 32, 1)
    assert labels["valid_masks"].dtype == tf.bool
    assert labels["image_info"].shape == (2, 4, 2)

    evaluation = segmentation_input.SegmentationInput(str(path), False, 2, (32, 32))
    assert [b[0].shape[0] for b in evaluation.make_dataset()] == [2, 2, 1]


def test_segmentation_input_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-\\*"):
        segmentation_input.SegmentationInput(str(tmp_path / "nothing-*"), True, 2, (32, 32))
