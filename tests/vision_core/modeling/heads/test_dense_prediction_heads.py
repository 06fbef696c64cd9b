"""RetinaNetHead and RPNHead: golden parameter counts, shapes, sharing, prior, config round trip.

Golden counts: the default head from /work/shared/API.md; the others measured in Model Garden
2.20 (reference venv) with the same constructor arguments on 256x256-input feature maps:

    ~/.cache/modelgarden-venv/bin/python -c "
    import tensorflow as tf
    from official.vision.modeling.heads import dense_prediction_heads as d
    f = {str(l): tf.zeros([1, 256 // 2**l, 256 // 2**l, 256]) for l in range(2, 8)}
    h = d.RetinaNetHead(3, 7, 80, 9, use_separable_conv=True); h(f); print(h.count_params())"

(`share_level_convs=False, num_convs=2` for the unshared figure; `RPNHead(2, 6, 3)` on levels
2..6 for the RPN one.) benchmarks/modelgarden_parity.py checks the outputs agree exactly once
Model Garden's weights are imported.
"""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.heads import dense_prediction_heads as dph


def _features(levels=range(3, 8), size=64, channels=16, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        str(level): tf.constant(
            rng.normal(size=[batch, max(1, size // 2**level), max(1, size // 2**level), channels]),
            tf.float32,
        )
        for level in levels
    }


def _golden_features(levels=range(3, 8)):
    return {str(lv): tf.zeros([1, 256 // 2**lv, 256 // 2**lv, 256]) for lv in levels}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # /work/shared/API.md: RetinaNet ResNet-50-FPN, 80 classes, head 6,504,180.
        ({}, 6_504_180),
        # Measured in Model Garden 2.20 (command in the module docstring).
        ({"use_separable_conv": True}, 784_628),
        ({"share_level_convs": False, "num_convs": 2}, 20_534_980),
    ],
)
def test_golden_parameter_counts(kwargs, expected):
    head = dph.RetinaNetHead(
        min_level=3, max_level=7, num_classes=80, num_anchors_per_location=9, **kwargs
    )
    head(_golden_features())
    assert head.count_params() == expected


def test_rpn_golden_parameter_count():
    # Measured in Model Garden 2.20: RPNHead(2, 6, 3) on 256-channel levels 2..6.
    head = dph.RPNHead(min_level=2, max_level=6, num_anchors_per_location=3)
    head(_golden_features(range(2, 7)))
    assert head.count_params() == 599_055


def test_output_shapes_per_level_match_compute_output_shape():
    head = dph.RetinaNetHead(3, 7, num_classes=5, num_anchors_per_location=6, num_filters=8)
    features = _features()
    scores, boxes, attributes = head(features)
    assert attributes == {}
    shapes = head.compute_output_shape({k: v.shape for k, v in features.items()})
    for level in range(3, 8):
        size = max(1, 64 // 2**level)
        assert scores[str(level)].shape.as_list() == [2, size, size, 30]
        assert boxes[str(level)].shape.as_list() == [2, size, size, 24]
        assert shapes[0][str(level)].as_list() == [2, size, size, 30]
        assert shapes[1][str(level)].as_list() == [2, size, size, 24]


def test_shared_convs_with_per_level_batch_norms():
    head = dph.RetinaNetHead(3, 5, num_classes=2, num_anchors_per_location=1, num_convs=2)
    head(_features(range(3, 6)))
    names = {w.name.split("/", 1)[1] for w in head.weights}
    assert "classnet-conv_0/kernel:0" in names
    assert not any(n.startswith("classnet-conv_3_") for n in names)
    for level in range(3, 6):
        assert f"classnet-conv-norm_{level}_1/gamma:0" in names
        assert f"boxnet-conv-norm_{level}_0/moving_mean:0" in names
    assert "scores/kernel:0" in names and "boxes/bias:0" in names


def test_unshared_levels_get_their_own_convs_and_predictors():
    head = dph.RetinaNetHead(
        3,
        4,
        num_classes=2,
        num_anchors_per_location={"3": 2, "4": 3},
        num_convs=1,
        num_filters=4,
        share_level_convs=False,
    )
    scores, boxes, _ = head(_features(range(3, 5), channels=4))
    names = {w.name.split("/", 1)[1] for w in head.weights}
    assert {"classnet-conv_3_0/kernel:0", "classnet-conv_4_0/kernel:0"} <= names
    assert {"scores-3/kernel:0", "scores-4/kernel:0", "boxes-4/bias:0"} <= names
    assert scores["3"].shape[-1] == 4 and scores["4"].shape[-1] == 6
    assert boxes["3"].shape[-1] == 8 and boxes["4"].shape[-1] == 12


def test_per_level_anchor_counts_need_unshared_predictors():
    with pytest.raises(ValueError, match="share_level_convs=False"):
        dph.RetinaNetHead(3, 4, 2, num_anchors_per_location={"3": 2, "4": 3})
    with pytest.raises(ValueError, match=r"lacks levels \[4\]"):
        dph.RetinaNetHead(3, 4, 2, num_anchors_per_location={"3": 2}, share_level_convs=False)


def test_class_logits_start_at_the_focal_loss_prior():
    head = dph.RetinaNetHead(3, 4, num_classes=3, num_anchors_per_location=2, num_filters=8)
    scores, boxes, _ = head(_features(range(3, 5)))
    prior = -math.log((1 - 0.01) / 0.01)
    # The predictors' kernels start near zero (stddev 1e-5): logits ~ the prior, boxes ~ 0.
    np.testing.assert_allclose(scores["3"].numpy(), prior, atol=1e-3)
    np.testing.assert_allclose(tf.sigmoid(scores["4"]).numpy(), 0.01, atol=1e-4)
    np.testing.assert_allclose(boxes["3"].numpy(), 0.0, atol=1e-3)


def test_separable_convs_and_regularizers():
    head = dph.RetinaNetHead(
        3,
        4,
        num_classes=2,
        num_anchors_per_location=1,
        num_convs=1,
        num_filters=8,
        use_separable_conv=True,
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
    )
    head(_features(range(3, 5)))
    kinds = {w.name.rsplit("/", 1)[1] for w in head.trainable_weights}
    assert {"depthwise_kernel:0", "pointwise_kernel:0"} <= kinds and "kernel:0" not in kinds
    # As Model Garden: only the separable predictors carry the kernel regularizer (2 each).
    assert len(head.losses) == 4


def test_attribute_heads_towers_shared_by_name_and_with_the_class_net():
    attribute_heads = [
        {"name": "depth", "type": "regression", "size": 1},
        {"name": "a", "type": "classification", "size": 3, "prediction_tower_name": "t"},
        {"name": "b", "type": "regression", "size": 2, "prediction_tower_name": "t"},
    ]
    head = dph.RetinaNetHead(
        3, 4, 2, 3, num_convs=1, num_filters=8, attribute_heads=attribute_heads
    )
    scores, boxes, attributes = head(_features(range(3, 5)))
    assert sorted(attributes) == ["a", "b", "depth"]
    assert attributes["a"]["3"].shape.as_list() == [2, 8, 8, 9]
    assert attributes["b"]["4"].shape.as_list() == [2, 4, 4, 6]
    names = {w.name.split("/", 1)[1] for w in head.weights}
    # Tower "t" is built from "a"'s convs; "b"'s are never called, so they hold no weights.
    assert "a-conv_0/kernel:0" in names and "b-conv_0/kernel:0" not in names
    assert {"depth-conv_0/kernel:0", "a_attributes/kernel:0", "b_attributes/kernel:0"} <= names
    prior = -math.log((1 - 0.01) / 0.01)
    np.testing.assert_allclose(attributes["a"]["3"].numpy(), prior, atol=1e-3)

    shared = dph.RetinaNetHead(
        3,
        4,
        2,
        3,
        num_convs=1,
        num_filters=8,
        share_classification_heads=True,
        attribute_heads=[{"name": "c", "type": "classification", "size": 2}],
    )
    shared(_features(range(3, 5)))
    shared_names = {w.name.split("/", 1)[1] for w in shared.weights}
    assert "c_attributes/kernel:0" in shared_names and "c-conv_0/kernel:0" not in shared_names


@pytest.mark.parametrize(
    ("heads", "kwargs", "match"),
    [
        ([{"name": "x", "type": "ranking"}], {}, "type 'ranking'"),
        ([{"name": "x"}, {"name": "x"}], {}, "unique"),
        ([{"name": "x", "size": 0}], {}, "size must be > 0"),
        ([{"name": "x", "shape": 2}], {}, "unknown keys"),
        (
            [{"name": "x", "prediction_tower_name": "t"}],
            {"share_classification_heads": True},
            "share_classification_heads",
        ),
    ],
)
def test_bad_attribute_heads_raise(heads, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dph.RetinaNetHead(3, 4, 2, 3, attribute_heads=heads, **kwargs)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="min_level 5 is greater than max_level 4"):
        dph.RetinaNetHead(5, 4, 2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        dph.RetinaNetHead(3, 4, 0, 3)
    head = dph.RetinaNetHead(3, 5, 2, 3, num_filters=8)
    with pytest.raises(ValueError, match="level 5 is missing"):
        head(_features(range(3, 5)))


def test_rpn_head_shapes_and_names():
    head = dph.RPNHead(min_level=2, max_level=4, num_anchors_per_location=3, num_filters=8)
    features = _features(range(2, 5))
    scores, boxes = head(features)
    for level in range(2, 5):
        size = 64 // 2**level
        assert scores[str(level)].shape.as_list() == [2, size, size, 3]
        assert boxes[str(level)].shape.as_list() == [2, size, size, 12]
    names = {w.name.split("/", 1)[1] for w in head.weights}
    assert {"rpn-conv_0/kernel:0", "rpn-conv-norm_3_0/gamma:0", "rpn-scores/kernel:0"} <= names
    shapes = head.compute_output_shape({k: v.shape for k, v in features.items()})
    assert shapes[1]["4"].as_list() == [2, 4, 4, 12]


@pytest.mark.parametrize("cls", ["retinanet", "rpn"])
def test_config_round_trips_through_json_and_keras(cls):
    if cls == "retinanet":
        head = dph.RetinaNetHead(
            3,
            5,
            4,
            {"3": 3, "4": 3, "5": 3},
            num_convs=1,
            num_filters=8,
            attribute_heads=[{"name": "depth", "type": "regression", "size": 1}],
            activation="swish",
            kernel_regularizer=tf_keras.regularizers.L2(1e-4),
            share_level_convs=False,
        )
    else:
        head = dph.RPNHead(3, 5, 3, num_filters=8, bias_regularizer="l2")
    features = _features(range(3, 6), channels=8)
    expected = tf.nest.flatten(head(features))
    config = json.loads(json.dumps(head.get_config()))
    clone = type(head).from_config(config)
    assert clone.get_config() == head.get_config()
    clone(features)
    clone.set_weights(head.get_weights())
    for a, b in zip(tf.nest.flatten(clone(features)), expected, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    again = tf_keras.layers.deserialize(tf_keras.layers.serialize(head))
    assert type(again) is type(head)
