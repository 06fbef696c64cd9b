"""RetinaNet input parser: targets, groundtruth in pixels, crowd handling, jitter bounds."""

import numpy as np
import pytest
import tensorflow as tf

from vision_core.dataloaders import retinanet_input
from vision_core.ops import preprocess_ops


def _example(height=100, width=120, crowd=(False, False)):
    return {
        "image": tf.cast(tf.random.stateless_uniform([height, width, 3], [1, 2], 0, 255), tf.uint8),
        "groundtruth_classes": tf.constant([1, 2], tf.int64),
        # Normalized (ymin, xmin, ymax, xmax).
        "groundtruth_boxes": tf.constant([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]]),
        "groundtruth_is_crowd": tf.constant(crowd),
        "groundtruth_area": tf.constant([10.0, 20.0]),
        "source_id": tf.constant("7"),
        "height": tf.constant(height, tf.int64),
        "width": tf.constant(width, tf.int64),
    }


def _parser(**kwargs):
    args = dict(
        output_size=[64, 64],
        min_level=3,
        max_level=5,
        num_scales=1,
        aspect_ratios=[1.0],
        anchor_size=4.0,
        max_num_instances=5,
    )
    args.update(kwargs)
    return retinanet_input.Parser(**args)


def test_train_targets_shapes_and_positives():
    image, labels = _parser()(_example(), is_training=True)
    assert image.shape == (64, 64, 3)
    # One anchor per location: levels 3/4/5 of a 64x64 image are 8x8, 4x4, 2x2.
    assert labels["cls_targets"]["3"].shape == (8, 8, 1)
    assert labels["box_targets"]["5"].shape == (2, 2, 4)
    assert labels["cls_weights"].shape == (8 * 8 + 4 * 4 + 2 * 2,)
    # Both boxes (about 26x32 and 26x21 px after the 64/120 resize) get matched anchors, and
    # only classes 1 and 2 appear as targets.
    positives = float(tf.reduce_sum(labels["box_weights"]))
    assert positives >= 2
    classes = np.concatenate([v.numpy().ravel() for v in labels["cls_targets"].values()])
    assert set(classes[classes > 0]) == {1, 2}


def test_eval_groundtruths_are_original_pixels_padded_with_minus_one():
    _, labels = _parser()(_example(), is_training=False)
    gt = labels["groundtruths"]
    # 0.1*100, 0.1*120, 0.4*100, 0.5*120 = 10, 12, 40, 60.
    np.testing.assert_allclose(gt["boxes"][0].numpy(), [10, 12, 40, 60], atol=1e-4)
    np.testing.assert_allclose(gt["boxes"][2:].numpy(), -1.0)
    assert gt["boxes"].shape == (5, 4)
    assert gt["classes"].numpy().tolist() == [1, 2, -1, -1, -1]
    assert int(gt["num_detections"]) == 2
    assert int(gt["source_id"]) == 7
    # image_info: original size, content size, scale (64/120 on both axes), zero offset.
    info = labels["image_info"].numpy()
    np.testing.assert_allclose(info[0], [100, 120])
    np.testing.assert_allclose(info[2], [round(100 * 64 / 120) / 100, 64 / 120], rtol=1e-6)


def test_crowd_boxes_are_skipped_in_training_only():
    parser = _parser()
    _, train = parser(_example(crowd=(False, True)), is_training=True)
    classes = np.concatenate([v.numpy().ravel() for v in train["cls_targets"].values()])
    assert 2 not in set(classes)
    _, evaluation = parser(_example(crowd=(False, True)), is_training=False)
    assert evaluation["groundtruths"]["is_crowds"].numpy().tolist()[:2] == [0, 1]


def test_scale_jitter_keeps_boxes_inside_the_output():
    parser = _parser(aug_scale_min=0.5, aug_scale_max=2.0, aug_rand_hflip=True)
    for seed in range(5):
        tf.random.set_seed(seed)
        image, labels = parser(_example(), is_training=True)
        assert image.shape == (64, 64, 3)
        info = labels["image_info"].numpy()
        assert info[1].tolist() == [64, 64]


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="aug_scale_min"):
        _parser(aug_scale_min=1.5)
    with pytest.raises(ValueError, match="unmatched_threshold"):
        _parser(match_threshold=0.4, unmatched_threshold=0.5)


def test_resize_and_crop_boxes_scales_shifts_and_clips():
    boxes = tf.constant([[10.0, 20.0, 50.0, 80.0]])
    # Scale 0.5 then shift by the crop offset (2, 4): (3, 6, 23, 36), clipped to 32 wide.
    out = preprocess_ops.resize_and_crop_boxes(
        boxes, tf.constant([0.5, 0.5]), tf.constant([32.0, 32.0]), tf.constant([2.0, 4.0])
    )
    np.testing.assert_allclose(out.numpy(), [[3, 6, 23, 32]])


def test_clip_or_pad_to_fixed_size():
    padded = preprocess_ops.clip_or_pad_to_fixed_size(tf.ones([3, 4]), 5, -1)
    assert padded.shape == (5, 4)
    np.testing.assert_allclose(padded.numpy()[3:], -1)
    assert preprocess_ops.clip_or_pad_to_fixed_size(tf.range(7), 5).numpy().tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]
