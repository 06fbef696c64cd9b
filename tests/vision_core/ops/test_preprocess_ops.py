"""Tests for vision_core.ops.preprocess_ops against hand-computed geometry and values."""

import numpy as np
import pytest
import tensorflow as tf

from vision_core.ops import preprocess_ops


def test_imagenet_constants_match_model_garden():
    # Model Garden: MEAN_RGB = 255 * (0.485, 0.456, 0.406),
    # STDDEV_RGB = 255 * (0.229, 0.224, 0.225).
    np.testing.assert_allclose(preprocess_ops.MEAN_RGB, (123.675, 116.28, 103.53))
    np.testing.assert_allclose(preprocess_ops.STDDEV_RGB, (58.395, 57.12, 57.375))


def test_normalize_image_uint8_by_hand():
    pixel = np.array([[[255, 0, 128]]], dtype=np.uint8)
    out = preprocess_ops.normalize_image(tf.constant(pixel)).numpy()
    expected = [
        (1.0 - 0.485) / 0.229,
        (0.0 - 0.456) / 0.224,
        (128 / 255 - 0.406) / 0.225,
    ]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_compute_padded_size_docstring_example():
    assert preprocess_ops.compute_padded_size((100, 200), 32) == [128, 224]
    tensor = preprocess_ops.compute_padded_size(tf.constant([100, 200]), 32)
    np.testing.assert_array_equal(tensor.numpy(), [128, 224])


def test_resize_and_crop_image_without_jitter():
    image = tf.ones([20, 30, 3])
    out, info = preprocess_ops.resize_and_crop_image(image, [32, 32], [32, 32])
    # scale = min(32/20, 32/30) = 16/15; scaled = round(20*16/15)=21, round(30*16/15)=32.
    np.testing.assert_allclose(
        info.numpy(), [[20, 30], [32, 32], [21 / 20, 32 / 30], [0, 0]], rtol=1e-6
    )
    assert out.shape == (32, 32, 3)
    np.testing.assert_allclose(out.numpy()[:21], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out.numpy()[21:], 0.0)


def test_resize_and_crop_image_jitter_keeps_output_size_and_offsets_in_range():
    tf.random.set_seed(3)
    image = tf.random.uniform([40, 40, 3])
    for _ in range(5):
        out, info = preprocess_ops.resize_and_crop_image(
            image, [24, 24], [32, 32], aug_scale_min=0.5, aug_scale_max=2.0
        )
        info = info.numpy()
        assert out.shape == (32, 32, 3)
        scaled = np.round(info[0] * info[2])
        assert np.all(info[3] >= 0)
        assert np.all(info[3] <= np.maximum(scaled - 24, 0))
        # Padding beyond the 24x24 content window is zero.
        np.testing.assert_array_equal(out.numpy()[24:], 0.0)
        np.testing.assert_array_equal(out.numpy()[:, 24:], 0.0)


def test_resize_and_crop_masks_follows_image_geometry():
    mask = np.arange(20 * 30, dtype=np.float32).reshape(1, 20, 30, 1)
    _, info = preprocess_ops.resize_and_crop_image(tf.zeros([20, 30, 3]), [40, 60], [48, 64])
    out = preprocess_ops.resize_and_crop_masks(tf.constant(mask), info[2], [48, 64], info[3])
    out = out.numpy()
    assert out.shape == (1, 48, 64, 1)
    # Exact 2x nearest upsampling: output (y, x) shows input (y // 2, x // 2).
    np.testing.assert_array_equal(out[0, :40, :60, 0], np.kron(mask[0, :, :, 0], np.ones((2, 2))))
    np.testing.assert_array_equal(out[0, 40:], 0)
    np.testing.assert_array_equal(out[0, :, 60:], 0)


def test_resize_and_crop_masks_accepts_no_masks():
    out = preprocess_ops.resize_and_crop_masks(tf.zeros([0, 5, 5, 1]), [2.0, 2.0], [8, 8], [0, 0])
    assert out.shape == (0, 8, 8, 1)


@pytest.mark.parametrize("prob,flipped", [(1.0, True), (0.0, False)])
def test_random_horizontal_flip_moves_image_boxes_and_masks_together(prob, flipped):
    image = tf.reshape(tf.range(12, dtype=tf.float32), [2, 6, 1])
    masks = tf.reshape(tf.range(12, dtype=tf.float32), [1, 2, 6])
    boxes = tf.constant([[0.1, 0.2, 0.5, 0.3]])
    out_image, out_boxes, out_masks = preprocess_ops.random_horizontal_flip(
        image, boxes, masks, prob=prob
    )
    if flipped:
        np.testing.assert_array_equal(out_image.numpy()[:, :, 0], image.numpy()[:, ::-1, 0])
        np.testing.assert_array_equal(out_masks.numpy(), masks.numpy()[:, :, ::-1])
        np.testing.assert_allclose(out_boxes.numpy(), [[0.1, 0.7, 0.5, 0.8]], rtol=1e-6)
    else:
        np.testing.assert_array_equal(out_image.numpy(), image.numpy())
        np.testing.assert_array_equal(out_masks.numpy(), masks.numpy())
        np.testing.assert_array_equal(out_boxes.numpy(), boxes.numpy())


def test_random_crop_keeps_pixel_correspondence():
    tf.random.set_seed(0)
    ys, xs = np.meshgrid(np.arange(10), np.arange(12), indexing="ij")
    image = np.stack([ys, xs, ys * 0], -1).astype(np.float32)
    mask = (ys * 100 + xs)[..., None].astype(np.float32)
    out_image, out_mask = preprocess_ops.random_crop_image_and_mask(
        tf.constant(image), tf.constant(mask), [4, 5], seed=7
    )
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_image.shape == (4, 5, 3) and out_mask.shape == (4, 5, 1)
    np.testing.assert_array_equal(out_mask[..., 0], out_image[..., 0] * 100 + out_image[..., 1])
    # The window is contiguous.
    np.testing.assert_array_equal(np.diff(out_image[:, 0, 0]), 1)
    np.testing.assert_array_equal(np.diff(out_image[0, :, 1]), 1)


def test_random_crop_pads_small_inputs_with_mask_pad_value():
    image = tf.ones([3, 4, 3])
    mask = tf.zeros([3, 4, 1])
    out_image, out_mask = preprocess_ops.random_crop_image_and_mask(
        image, mask, [6, 4], mask_pad_value=255
    )
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_image.shape == (6, 4, 3)
    # Only the padded rows carry the pad value, and the image there is zero.
    np.testing.assert_array_equal(out_mask[:3], 0)
    np.testing.assert_array_equal(out_mask[3:], 255)
    np.testing.assert_array_equal(out_image[3:], 0)
