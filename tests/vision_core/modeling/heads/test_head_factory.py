"""Head factory: SegmentationHead and MaskScoring from model configs."""

import pytest
import tensorflow as tf
import tf_keras

from vision_core.configs import semantic_segmentation as seg_cfg
from vision_core.modeling.heads import factory, segmentation_heads


def _config(**head_kwargs):
    config = seg_cfg.SemanticSegmentationModel(
        num_classes=21, head=seg_cfg.SegmentationHead(**head_kwargs)
    )
    config.norm_activation.activation = "swish"
    config.norm_activation.norm_epsilon = 1e-5
    return config


def test_segmentation_head_reads_head_num_classes_and_norm_activation():
    config = _config(
        level=4,
        num_convs=1,
        num_filters=32,
        feature_fusion="deeplabv3plus",
        low_level=2,
        low_level_num_filters=24,
        upsample_factor=4,
        prediction_kernel_size=3,
        logit_activation="softmax",
    )
    l2 = tf_keras.regularizers.l2(1e-4)
    head = factory.build_segmentation_head(config, l2_regularizer=l2)
    assert isinstance(head, segmentation_heads.SegmentationHead)
    got = head.get_config()
    expected = dict(
        num_classes=21,
        level=4,
        num_convs=1,
        num_filters=32,
        feature_fusion="deeplabv3plus",
        low_level=2,
        low_level_num_filters=24,
        upsample_factor=4,
        prediction_kernel_size=3,
        logit_activation="softmax",
        activation="swish",
        norm_epsilon=1e-5,
    )
    assert {k: got[k] for k in expected} == expected
    assert got["kernel_regularizer"] is l2
    features = {"2": tf.zeros([1, 16, 16, 8]), "4": tf.zeros([1, 4, 4, 8])}
    assert head((features, features)).shape.as_list() == [1, 64, 64, 21]


def test_mask_scoring_head_none_when_unset():
    assert factory.build_mask_scoring_head(_config()) is None


def test_mask_scoring_head_from_config_maps_num_fc():
    config = _config()
    config.mask_scoring_head = seg_cfg.MaskScoringHead(
        num_convs=1, num_filters=8, fc_input_size=[4, 4], num_fc=1, fc_dims=16
    )
    head = factory.build_mask_scoring_head(config)
    got = head.get_config()
    assert (got["num_fcs"], got["fc_dims"], got["fc_input_size"]) == (1, 16, [4, 4])
    assert head(tf.zeros([2, 8, 8, 21])).shape.as_list() == [2, 21]


def test_num_classes_must_be_positive():
    config = _config()
    config.num_classes = 0
    with pytest.raises(ValueError, match="num_classes"):
        factory.build_segmentation_head(config)
