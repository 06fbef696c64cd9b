"""SegmentationHead (every feature_fusion mode) and MaskScoring."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.heads import segmentation_heads as sh

SIZE = 64
BACKBONE_CHANNELS = {"2": 8, "3": 12, "4": 16, "5": 20}
DECODER_CHANNELS = 16


def _pyramid(channels, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    return {
        level: tf.constant(
            rng.normal(size=[batch, SIZE // 2 ** int(level), SIZE // 2 ** int(level), c]),
            tf.float32,
        )
        for level, c in channels.items()
    }


def _inputs(batch=1):
    backbone = _pyramid(BACKBONE_CHANNELS, batch, seed=1)
    decoder = _pyramid({lv: DECODER_CHANNELS for lv in BACKBONE_CHANNELS}, batch, seed=2)
    return backbone, decoder


def _shapes(features):
    return {k: v.shape for k, v in features.items()}


# (kwargs, expected logits height/width for a 64x64 image)
FUSION_CASES = {
    "none": (dict(level=3), 8),
    "none_upsampled": (dict(level=3, upsample_factor=2), 16),
    "deeplabv3plus": (dict(level=4, feature_fusion="deeplabv3plus", low_level=2), 16),
    "deeplabv3plus_sum_to_merge": (
        dict(
            level=4,
            feature_fusion="deeplabv3plus_sum_to_merge",
            low_level=3,
            low_level_num_filters=DECODER_CHANNELS,
        ),
        8,
    ),
    "pyramid_fusion": (dict(level=3, feature_fusion="pyramid_fusion"), 8),
    "panoptic_fpn_fusion": (
        dict(
            level=2,
            feature_fusion="panoptic_fpn_fusion",
            decoder_min_level=2,
            decoder_max_level=5,
            num_filters=32,
            num_decoder_filters=DECODER_CHANNELS,
        ),
        16,
    ),
    "panoptic_target_below_decoder": (
        dict(
            level=1,
            feature_fusion="panoptic_fpn_fusion",
            decoder_min_level=2,
            decoder_max_level=4,
            num_filters=32,
            num_decoder_filters=DECODER_CHANNELS,
        ),
        32,
    ),
    "pyramid_target_below_decoder": (dict(level=1, feature_fusion="pyramid_fusion"), 32),
    "panoptic_inferred_levels": (
        dict(
            level=3,
            feature_fusion="panoptic_fpn_fusion",
            num_filters=32,
            num_decoder_filters=DECODER_CHANNELS,
        ),
        8,
    ),
}


@pytest.mark.parametrize("case", sorted(FUSION_CASES))
def test_every_fusion_mode_output_shape_and_compute_output_shape(case):
    kwargs, size = FUSION_CASES[case]
    head = sh.SegmentationHead(
        num_classes=5, num_convs=1, num_filters=kwargs.pop("num_filters", 8), **kwargs
    )
    backbone, decoder = _inputs(batch=2)
    logits = head((backbone, decoder))
    assert logits.shape.as_list() == [2, size, size, 5]
    predicted = head.compute_output_shape((_shapes(backbone), _shapes(decoder)))
    assert predicted.as_list() == [2, size, size, 5]


def test_tutorial_deeplabv3plus_head_config():
    # /work/shared/seeds/segmentation.md: num_classes=21, level=4, deeplabv3plus, low_level=2,
    # upsample_factor=4 on ResNet-50 features (level 2: 256 channels, level 4 at output stride
    # 16: 1024). Fusion happens at the level-2 resolution (H/4); the 4x upsampling brings the
    # logits back to the input resolution, as Model Garden's head does.
    head = sh.SegmentationHead(
        num_classes=21,
        level=4,
        num_convs=2,
        num_filters=256,
        feature_fusion="deeplabv3plus",
        low_level=2,
        low_level_num_filters=48,
        upsample_factor=4,
        use_sync_bn=False,
        norm_momentum=0.99,
        norm_epsilon=0.001,
    )
    backbone = {
        "2": tf.zeros([1, SIZE // 4, SIZE // 4, 256]),
        "4": tf.zeros([1, SIZE // 16, SIZE // 16, 1024]),
    }
    logits = head((backbone, backbone))
    assert logits.shape.as_list() == [1, SIZE, SIZE, 21]
    # Parameters by hand: 1x1 low-level conv (no bias) + BN, 3x3 convs (no bias) + BN,
    # 1x1 classifier with bias.
    expected = (
        256 * 48
        + 4 * 48
        + 9 * (1024 + 48) * 256
        + 4 * 256
        + 9 * 256 * 256
        + 4 * 256
        + 256 * 21
        + 21
    )
    assert head.count_params() == expected


def test_deeplabv3plus_fuses_low_level_features():
    head = sh.SegmentationHead(
        num_classes=3,
        level=4,
        num_convs=1,
        num_filters=8,
        feature_fusion="deeplabv3plus",
        low_level=2,
    )
    backbone, decoder = _inputs()
    ref = head((backbone, decoder)).numpy()
    changed = dict(backbone, **{"2": backbone["2"] + 1.0})
    assert not np.allclose(head((changed, decoder)), ref)
    # The decoder's level 4 is what gets fused; its other levels are ignored.
    other = dict(decoder, **{"3": decoder["3"] + 1.0})
    np.testing.assert_allclose(head((backbone, other)), ref)


def test_depthwise_parameter_count_by_hand():
    c, f, k = DECODER_CHANNELS, 8, 3
    head = sh.SegmentationHead(
        num_classes=k,
        level=3,
        num_convs=2,
        num_filters=f,
        use_depthwise_convolution=True,
        prediction_kernel_size=3,
    )
    backbone, decoder = _inputs()
    head((backbone, decoder))
    first = 9 * c + 4 * c + c * f + 4 * f
    second = 9 * f + 4 * f + f * f + 4 * f
    classifier = 9 * f * k + k
    assert head.count_params() == first + second + classifier


def test_logit_activation_softmax_sums_to_one():
    head = sh.SegmentationHead(num_classes=4, level=3, num_convs=0, logit_activation="softmax")
    logits = head(_inputs())
    np.testing.assert_allclose(tf.reduce_sum(logits, -1), 1.0, rtol=1e-5)


def test_single_tensor_inputs_are_accepted():
    head = sh.SegmentationHead(num_classes=2, level=3, num_convs=1, num_filters=4)
    x = tf.zeros([1, 8, 8, 6])
    assert head((x, x)).shape.as_list() == [1, 8, 8, 2]


def test_unknown_feature_fusion_raises():
    with pytest.raises(ValueError, match="feature_fusion 'unet'"):
        sh.SegmentationHead(num_classes=2, level=3, feature_fusion="unet")


def test_missing_level_is_named():
    head = sh.SegmentationHead(num_classes=2, level=6, num_convs=0)
    with pytest.raises(ValueError, match="level 6"):
        head(_inputs())


def test_head_get_config_round_trip_json():
    head = sh.SegmentationHead(
        num_classes=21,
        level=4,
        feature_fusion="deeplabv3plus",
        upsample_factor=4,
        kernel_regularizer=tf_keras.regularizers.l2(1e-4),
    )
    config = json.loads(json.dumps(tf_keras.layers.serialize(head)))
    clone = tf_keras.layers.deserialize(config)
    assert isinstance(clone, sh.SegmentationHead)
    clone_config = clone.get_config()
    assert clone_config["kernel_regularizer"].get_config() == pytest.approx({"l2": 1e-4})
    for key in ("num_classes", "level", "feature_fusion", "upsample_factor", "low_level"):
        assert clone_config[key] == head.get_config()[key]


def test_regularizer_reaches_every_kernel():
    head = sh.SegmentationHead(
        num_classes=2,
        level=4,
        num_convs=2,
        num_filters=4,
        feature_fusion="deeplabv3plus",
        kernel_regularizer=tf_keras.regularizers.l2(1e-3),
    )
    head(_inputs())
    assert len(head.losses) == 4  # low-level conv, two convs, classifier


# ---------------------------------------------------------------------------- MaskScoring
def test_mask_scoring_shape_and_parameters_by_hand():
    k, f, fc, size = 3, 8, 16, [4, 4]
    head = sh.MaskScoring(
        num_classes=k, fc_input_size=size, num_convs=2, num_filters=f, fc_dims=fc, num_fcs=2
    )
    scores = head(tf.random.stateless_normal([2, 16, 16, k], seed=[0, 1]))
    assert scores.shape.as_list() == [2, k]
    convs = (9 * k * f + f + 4 * f) + (9 * f * f + f + 4 * f)
    fcs = (4 * 4 * f * fc + fc + 4 * fc) + (fc * fc + fc + 4 * fc)
    classifier = fc * k + k
    assert head.count_params() == convs + fcs + classifier
    assert head.compute_output_shape(tf.TensorShape([2, 16, 16, k])).as_list() == [2, k]


def test_mask_scoring_stops_gradient_to_logits():
    head = sh.MaskScoring(
        num_classes=2, fc_input_size=[2, 2], num_convs=1, num_filters=4, fc_dims=4, num_fcs=1
    )
    logits = tf.Variable(tf.random.stateless_normal([1, 8, 8, 2], seed=[5, 6]))
    with tf.GradientTape() as tape:
        score = tf.reduce_sum(head(logits, training=True))
    grads = tape.gradient(score, [logits, *head.trainable_variables])
    assert grads[0] is None
    assert all(g is not None for g in grads[1:])


def test_mask_scoring_accepts_config_spelling_num_fc_and_round_trips():
    head = sh.MaskScoring(num_classes=2, fc_input_size=[2, 2], num_fc=3)
    assert head.get_config()["num_fcs"] == 3
    clone = sh.MaskScoring.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
