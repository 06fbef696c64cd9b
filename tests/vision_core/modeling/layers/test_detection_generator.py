"""Tests for vision_core.modeling.layers.detection_generator on crafted raw outputs."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import detection_generator
from vision_core.ops import anchor

# Image 64x64, levels 3-4, one square anchor per location (anchor_size 4): level 3 is an 8x8
# grid of 32x32 anchors at stride 8, level 4 a 4x4 grid of 64x64 anchors at stride 16.
# Three classes: 0 (background), 1 and 2. All logits are -10 (score 4.5e-5, under the 0.05
# threshold) except:
#   D1: level 3, cell (1, 1), class 1, logit 3 -> score 0.9526; anchor center (12, 12):
#       [-4, -4, 28, 28], clipped to [0, 0, 28, 28].
#   D2: level 3, cell (1, 2), class 1, logit 2 -> 0.8808; center (12, 20): [-4, 4, 28, 36]
#       -> [0, 4, 28, 36]. IoU with D1: intersection 28 x 24 = 672, union 784 + 896 - 672 =
#       1008 -> 0.667 > 0.5, so class-1 NMS removes it.
#   D3: the same cell as D2, class 2, logit 1 -> 0.7311; another class, so it stays.
#   D4: level 4, cell (3, 3), class 2, logit 0 -> 0.5, box code dy = 0.25: anchor [24, 24, 88,
#       88] moves down by 0.25 * 64 = 16 to [40, 24, 104, 88], clipped to [40, 24, 64, 64].
NUM_CLASSES = 3
ANCHORS = anchor.Anchor(3, 4, 1, [1.0], 4.0, [64, 64]).multilevel_boxes
SIGMOID = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
D1 = (SIGMOID(3.0), 1, [0.0, 0.0, 28.0, 28.0])
D2 = (SIGMOID(2.0), 1, [0.0, 4.0, 28.0, 36.0])
D3 = (SIGMOID(1.0), 2, [0.0, 4.0, 28.0, 36.0])
D4 = (SIGMOID(0.0), 2, [40.0, 24.0, 64.0, 64.0])


def _raw_outputs(batch: int = 1):
    scores = {"3": np.full([batch, 8, 8, NUM_CLASSES], -10.0, np.float32)}
    scores["4"] = np.full([batch, 4, 4, NUM_CLASSES], -10.0, np.float32)
    boxes = {
        "3": np.zeros([batch, 8, 8, 4], np.float32),
        "4": np.zeros([batch, 4, 4, 4], np.float32),
    }
    scores["3"][:, 1, 1, 1] = 3.0
    scores["3"][:, 1, 2, 1] = 2.0
    scores["3"][:, 1, 2, 2] = 1.0
    scores["4"][:, 3, 3, 2] = 0.0
    boxes["4"][:, 3, 3, 0] = 0.25
    as_tensors = lambda d: {k: tf.constant(v) for k, v in d.items()}  # noqa: E731
    return as_tensors(boxes), as_tensors(scores)


def _run(generator, batch=1, image_shape=None, anchors=None, **kwargs):
    raw_boxes, raw_scores = _raw_outputs(batch)
    if anchors is None:
        anchors = {k: tf.tile(v[None], [batch, 1, 1, 1]) for k, v in ANCHORS.items()}
    if image_shape is None:
        image_shape = tf.constant([[64.0, 64.0]] * batch)
    return generator(raw_boxes, raw_scores, anchors, image_shape, **kwargs)


def _assert_detections(out, expected, image=0, max_det=5):
    n = len(expected)
    assert int(out["num_detections"][image]) == n
    np.testing.assert_allclose(
        out["detection_scores"][image, :n], [d[0] for d in expected], rtol=1e-5
    )
    np.testing.assert_array_equal(out["detection_classes"][image, :n], [d[1] for d in expected])
    np.testing.assert_allclose(
        out["detection_boxes"][image, :n], [d[2] for d in expected], atol=1e-4
    )
    # Padding past num_detections is all zero.
    assert out["detection_boxes"].shape[1] == max_det
    np.testing.assert_array_equal(out["detection_scores"][image, n:], 0.0)
    np.testing.assert_array_equal(out["detection_classes"][image, n:], 0)
    np.testing.assert_array_equal(out["detection_boxes"][image, n:], 0.0)


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "batched"])
def test_best_boxes_in_order_with_per_class_nms_and_clipping(version):
    gen = detection_generator.MultilevelDetectionGenerator(
        max_num_detections=5, nms_version=version
    )
    out = _run(tf.function(gen.__call__))
    assert out["detection_classes"].dtype == tf.int32
    assert out["num_detections"].dtype == tf.int32
    _assert_detections(out, [D1, D3, D4])


def test_max_num_detections_truncates():
    gen = detection_generator.MultilevelDetectionGenerator(max_num_detections=2)
    _assert_detections(_run(gen), [D1, D3], max_det=2)


def test_score_threshold_and_unbatched_anchors():
    # 0.6 drops D4 (score 0.5); anchors given without a batch axis are shared.
    gen = detection_generator.MultilevelDetectionGenerator(
        max_num_detections=5, pre_nms_score_threshold=0.6
    )
    _assert_detections(_run(gen, anchors=ANCHORS), [D1, D3])


def test_per_image_clipping_in_a_batch():
    # Image 1 is 20 high and 30 wide: D1 -> [0, 0, 20, 28], D3 -> [0, 4, 20, 30], and D4's
    # anchor lies entirely below the image: [40, 24, 64, 64] clips to [20, 24, 20, 30].
    gen = detection_generator.MultilevelDetectionGenerator(max_num_detections=5)
    out = _run(gen, batch=2, image_shape=tf.constant([[64.0, 64.0], [20.0, 30.0]]))
    _assert_detections(out, [D1, D3, D4], image=0)
    clipped = [
        (D1[0], 1, [0.0, 0.0, 20.0, 28.0]),
        (D3[0], 2, [0.0, 4.0, 20.0, 30.0]),
        (D4[0], 2, [20.0, 24.0, 20.0, 30.0]),
    ]
    _assert_detections(out, clipped, image=1)


def test_class_agnostic_nms_lets_classes_suppress_each_other():
    # The D2/D3 anchor competes with its best class (1, score 0.8808) and D1 removes it.
    gen = detection_generator.MultilevelDetectionGenerator(
        max_num_detections=5, nms_version="v2", use_class_agnostic_nms=True
    )
    _assert_detections(_run(gen), [D1, D4])


def test_small_pool_falls_back_to_the_exact_per_class_top_k():
    # pre_nms_top_k=1: each class keeps only its best candidate (D1 for class 1, D3 for
    # class 2). The pool of one pair yields a single detection, so the layer must recompute.
    gen = detection_generator.MultilevelDetectionGenerator(max_num_detections=5, pre_nms_top_k=1)
    _assert_detections(_run(tf.function(gen.__call__)), [D1, D3])


def test_background_column_is_never_detected():
    # The background logit of D4's anchor is the largest of all; it must not become a
    # detection nor displace one.
    raw_boxes, raw_scores = _raw_outputs()
    scores_4 = raw_scores["4"].numpy()
    scores_4[0, 3, 3, 0] = 8.0
    raw_scores["4"] = tf.constant(scores_4)
    gen = detection_generator.MultilevelDetectionGenerator(max_num_detections=5)
    anchors = {k: v[None] for k, v in ANCHORS.items()}
    out = gen(raw_boxes, raw_scores, anchors, tf.constant([[64.0, 64.0]]))
    _assert_detections(out, [D1, D3, D4])


def test_pools_grow_until_enough_boxes_survive(monkeypatch):
    # A first pool of 2 pairs holds D1 and D2 only: one survivor, so the next pool
    # (pre_nms_top_k) is tried. With pre_nms_top_k=3 that pool (D1, D2, D3) still falls short,
    # so every anchor is used, with each class keeping its best 3 candidates.
    monkeypatch.setattr(detection_generator, "_FIRST_POOL", 2)
    monkeypatch.setattr(detection_generator, "_FIRST_POOL_PER_DETECTION", 0)
    for top_k in (5000, 3):
        gen = detection_generator.MultilevelDetectionGenerator(
            max_num_detections=5, pre_nms_top_k=top_k
        )
        _assert_detections(_run(tf.function(gen.__call__)), [D1, D3, D4])


def test_soft_nms_rescores_the_overlapping_box():
    # With IoU threshold 1 nothing is dropped; D2 (IoU 2/3 with D1) is rescored by
    # exp(-(2/3)^2 / (2 * 0.5)) and ranks between D3 and D4.
    gen = detection_generator.MultilevelDetectionGenerator(
        max_num_detections=5, nms_version="v1", soft_nms_sigma=0.5, nms_iou_threshold=1.0
    )
    rescored = (D2[0] * math.exp(-((672.0 / 1008.0) ** 2)), 1, D2[2])
    _assert_detections(_run(gen), [D1, D3, rescored, D4])


def test_attributes_follow_their_anchor():
    # The attribute of an anchor is 100 * level + its cell index.
    raw_attributes = {
        "depth": {
            "3": tf.reshape(300.0 + tf.range(64, dtype=tf.float32), [1, 8, 8, 1]),
            "4": tf.reshape(400.0 + tf.range(16, dtype=tf.float32), [1, 4, 4, 1]),
        }
    }
    for version in ("v1", "v2"):
        gen = detection_generator.MultilevelDetectionGenerator(
            max_num_detections=5, nms_version=version
        )
        out = _run(gen, raw_attributes=raw_attributes)
        # D1 = level 3 cell (1, 1) = index 9; D3 = cell (1, 2) = 10; D4 = level 4 cell 15.
        np.testing.assert_allclose(
            out["detection_attributes"]["depth"][0, :, 0], [309.0, 310.0, 415.0, 0.0, 0.0]
        )


def test_without_nms_returns_every_decoded_box():
    gen = detection_generator.MultilevelDetectionGenerator(apply_nms=False)
    out = _run(gen)
    assert set(out) == {"decoded_boxes", "decoded_box_scores", "decoded_box_attributes"}
    assert out["decoded_boxes"].shape == (1, 64 + 16, 1, 4)
    assert out["decoded_box_scores"].shape == (1, 64 + 16, NUM_CLASSES - 1)
    np.testing.assert_allclose(out["decoded_boxes"][0, 9, 0], D1[2], atol=1e-4)
    np.testing.assert_allclose(out["decoded_box_scores"][0, 9], [D1[0], SIGMOID(-10.0)], rtol=1e-5)

    both = detection_generator.MultilevelDetectionGenerator(
        max_num_detections=5, return_decoded=True
    )
    out = _run(both)
    assert "decoded_boxes" in out and int(out["num_detections"][0]) == 3


def test_config_round_trip_and_keras_registration():
    gen = detection_generator.MultilevelDetectionGenerator(
        pre_nms_top_k=100, nms_version="batched", box_coder_weights=[10.0, 10.0, 5.0, 5.0]
    )
    config = gen.get_config()
    again = detection_generator.MultilevelDetectionGenerator.from_config(config)
    assert again.get_config() == config
    restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(gen))
    assert isinstance(restored, detection_generator.MultilevelDetectionGenerator)
    assert restored.get_config()["box_coder_weights"] == [10.0, 10.0, 5.0, 5.0]


def test_invalid_arguments_name_the_argument():
    with pytest.raises(ValueError, match="nms_version"):
        detection_generator.MultilevelDetectionGenerator(nms_version="tflite")
    with pytest.raises(ValueError, match="use_class_agnostic_nms"):
        detection_generator.MultilevelDetectionGenerator(
            nms_version="v1", use_class_agnostic_nms=True
        )
    with pytest.raises(ValueError, match="max_num_detections"):
        detection_generator.DetectionGenerator(max_num_detections=0)


def test_saved_model_round_trip(tmp_path):
    gen = detection_generator.MultilevelDetectionGenerator(max_num_detections=5)
    raw_boxes, raw_scores = _raw_outputs()
    module = tf.Module()
    module.detect = tf.function(
        lambda boxes, scores: gen(boxes, scores, ANCHORS, tf.constant([[64.0, 64.0]])),
        input_signature=[
            {k: tf.TensorSpec(v.shape, tf.float32) for k, v in raw_boxes.items()},
            {k: tf.TensorSpec(v.shape, tf.float32) for k, v in raw_scores.items()},
        ],
    )
    tf.saved_model.save(module, str(tmp_path))
    out = tf.saved_model.load(str(tmp_path)).detect(raw_boxes, raw_scores)
    _assert_detections(out, [D1, D3, D4])


def test_two_stage_detection_generator_by_hand():
    # Three RoIs, zero box codes (boxes = RoIs), softmax over [background, class 1, class 2].
    # RoI 0 logits [0, 5, 0]: class 1 prob e^5 / (e^5 + 2) = 0.98670.
    # RoI 1 logits [0, 4, 0]: class 1 prob 0.96466, but IoU 0.818 with RoI 0 -> suppressed.
    # RoI 2 logits [0, 0, 3]: class 2 prob e^3 / (e^3 + 2) = 0.90941. Every other class
    # probability is below 0.05 (largest: RoI 2 class 1, 1 / (e^3 + 2) = 0.0453).
    rois = tf.constant([[[0.0, 0.0, 10.0, 10.0], [0.0, 1.0, 10.0, 11.0], [20.0, 20.0, 30.0, 30.0]]])
    logits = tf.constant([[[0.0, 5.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 3.0]]])
    expected = [
        (math.exp(5) / (math.exp(5) + 2), 1, [0.0, 0.0, 10.0, 10.0]),
        (math.exp(3) / (math.exp(3) + 2), 2, [20.0, 20.0, 30.0, 30.0]),
    ]
    for version in ("v1", "v2", "batched"):
        gen = detection_generator.DetectionGenerator(max_num_detections=4, nms_version=version)
        out = gen(tf.zeros([1, 3, 12]), logits, rois, tf.constant([[64.0, 64.0]]))
        _assert_detections(out, expected, max_det=4)
    shared = detection_generator.DetectionGenerator(max_num_detections=4)
    out = shared(tf.zeros([1, 3, 4]), logits, rois, None, bbox_per_class=False)
    _assert_detections(out, expected, max_det=4)
    decoded = detection_generator.DetectionGenerator(apply_nms=False)(
        tf.zeros([1, 3, 12]), logits, rois, None
    )
    assert decoded["decoded_boxes"].shape == (1, 3, 2, 4)
    assert decoded["decoded_box_scores"].shape == (1, 3, 2)
