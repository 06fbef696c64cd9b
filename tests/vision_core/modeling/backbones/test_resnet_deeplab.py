"""Tests for vision_core.modeling.backbones.resnet_deeplab.

Output shapes follow Model Garden's official/vision/modeling/backbones/resnet_deeplab_test.py;
parameter counts are derived by hand from ResNet-50's golden count (API.md) because dilation
adds no variables.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones import resnet, resnet_deeplab
from vision_core.modeling.layers import nn_blocks

RESNET50 = 23_561_152


def _bottlenecks(model):
    return [layer for layer in model.layers if isinstance(layer, nn_blocks.BottleneckBlock)]


def _bottleneck_params(in_ch, filters, projection):
    out = 4 * filters
    total = in_ch * filters + 4 * filters + 9 * filters * filters + 4 * filters
    total += filters * out + 4 * out
    if projection:
        total += in_ch * out + 4 * out
    return total


@pytest.mark.parametrize(
    "model_id, output_stride, levels",
    [(50, 8, ["2", "3"]), (50, 16, ["2", "3", "4"]), (101, 16, ["2", "3", "4"])],
)
def test_output_shapes(model_id, output_stride, levels):
    network = resnet_deeplab.DilatedResNet(model_id=model_id, output_stride=output_stride)
    endpoints = network(tf_keras.Input(shape=(128, 128, 3), batch_size=1))
    assert sorted(endpoints) == levels
    top = levels[-1]
    size = 128 // output_stride
    assert endpoints[top].shape.as_list() == [1, size, size, 2048]
    assert endpoints["2"].shape.as_list() == [1, 32, 32, 256]
    assert {k: v.as_list()[-1] for k, v in network.output_specs.items()} == {
        k: v.shape[-1] for k, v in endpoints.items()
    }


def test_dilation_adds_no_variables():
    network = resnet_deeplab.DilatedResNet(model_id=50, output_stride=16)
    assert network.count_params() == RESNET50


def test_matches_resnet_with_output_stride():
    """The tutorial's ResNet(output_stride=16) is the same network as DilatedResNet."""
    shape = [None, 64, 64, 3]
    dilated = resnet_deeplab.DilatedResNet(
        model_id=50, output_stride=16, input_specs=tf_keras.layers.InputSpec(shape=shape)
    )
    plain = resnet.ResNet(
        model_id=50, output_stride=16, input_specs=tf_keras.layers.InputSpec(shape=shape)
    )
    assert dilated.output_specs == plain.output_specs
    plain.set_weights(dilated.get_weights())
    images = tf.random.stateless_uniform([1, 64, 64, 3], seed=[7, 8])
    expected = dilated(images, training=False)
    actual = plain(images, training=False)
    for level in expected:
        np.testing.assert_allclose(actual[level], expected[level], rtol=1e-5, atol=1e-5)


def test_real_output_matches_output_specs():
    network = resnet_deeplab.DilatedResNet(
        model_id=50,
        output_stride=8,
        input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]),
    )
    outputs = network(tf.zeros([2, 64, 64, 3]), training=False)
    for level, spec in network.output_specs.items():
        assert spec.as_list() == [None] + outputs[level].shape.as_list()[1:]
    assert network.output_specs["3"].as_list() == [None, 8, 8, 2048]


@pytest.mark.parametrize(
    "output_stride, expected",
    [
        # Stride 16: level-5 group at dilation 2, times the multigrid.
        (16, [1] * 13 + [2, 4, 8]),
        # Stride 8: level-4 group at dilation 2, level-5 group at 4 times the multigrid.
        (8, [1] * 7 + [2] * 6 + [4, 8, 16]),
    ],
)
def test_multigrid_dilations(output_stride, expected):
    network = resnet_deeplab.DilatedResNet(
        model_id=50, output_stride=output_stride, multigrid=(1, 2, 4)
    )
    assert [b.get_config()["dilation_rate"] for b in _bottlenecks(network)] == expected


def test_multigrid_length_must_match_last_stage():
    with pytest.raises(ValueError, match="multigrid: expected 3 values"):
        resnet_deeplab.DilatedResNet(model_id=50, output_stride=16, multigrid=(1, 2))


def test_last_stage_repeats():
    network = resnet_deeplab.DilatedResNet(
        model_id=50,
        output_stride=16,
        multigrid=(1, 2, 4),
        last_stage_repeats=2,
        init_stochastic_depth_rate=0.6,
    )
    # One more copy of the last stage, fed by the 2048-channel output of the first copy.
    extra = _bottleneck_params(2048, 512, True) + 2 * _bottleneck_params(2048, 512, False)
    assert network.count_params() == RESNET50 + extra
    blocks = _bottlenecks(network)
    assert [b.get_config()["dilation_rate"] for b in blocks][-6:] == [2, 4, 8, 4, 8, 16]
    assert network.get_layer("block_group_l6") is not None
    assert network.output_specs["4"].as_list() == [None, None, None, 2048]
    # Stochastic depth is spread over 4 + last_stage_repeats positions.
    rates = sorted({b.get_config()["stochastic_depth_drop_rate"] for b in blocks})
    np.testing.assert_allclose(rates, [0.6 * level / 6 for level in (2, 3, 4, 5, 6)])


def test_v1_stem_is_64_64_128_wide():
    v0_stem = 7 * 7 * 3 * 64 + 4 * 64
    v1_stem = 27 * 64 + 4 * 64 + 9 * 64 * 64 + 4 * 64 + 9 * 64 * 128 + 4 * 128
    # The first block now reads 128 channels: its 1x1 reduce and projection grow.
    first_block = (128 - 64) * 64 + (128 - 64) * 256
    network = resnet_deeplab.DilatedResNet(model_id=50, output_stride=16, stem_type="v1")
    assert network.count_params() == RESNET50 - v0_stem + v1_stem + first_block
    # Replacing the max pool by a 128->64 conv brings the first block back to 64 inputs.
    replaced = resnet_deeplab.DilatedResNet(
        model_id=50, output_stride=16, stem_type="v1", replace_stem_max_pool=True
    )
    assert replaced.count_params() == (RESNET50 - v0_stem + v1_stem + 9 * 128 * 64 + 4 * 64)


@pytest.mark.parametrize(
    "stem_type, se_ratio, sd_rate, resnetd, replace_pool",
    [
        # A selection of Model Garden's test_network_features cases.
        ("v1", 0.25, 0.0, True, False),
        ("v1", 0.25, 0.2, False, True),
        ("v1", None, 0.2, True, True),
    ],
)
def test_network_features(stem_type, se_ratio, sd_rate, resnetd, replace_pool):
    network = resnet_deeplab.DilatedResNet(
        model_id=50,
        output_stride=8,
        stem_type=stem_type,
        resnetd_shortcut=resnetd,
        replace_stem_max_pool=replace_pool,
        se_ratio=se_ratio,
        init_stochastic_depth_rate=sd_rate,
    )
    endpoints = network(tf_keras.Input(shape=(128, 128, 3), batch_size=1))
    assert endpoints["3"].shape.as_list() == [1, 16, 16, 2048]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model_id": 50, "output_stride": None}, "output_stride"),
        ({"model_id": 50, "output_stride": 12}, "output_stride"),
        ({"model_id": 49, "output_stride": 16}, "model_id"),
        ({"model_id": 50, "output_stride": 16, "stem_type": "v3"}, "stem_type"),
        ({"model_id": 50, "output_stride": 16, "last_stage_repeats": 0}, "last_stage_repeats"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet_deeplab.DilatedResNet(**kwargs)


def test_config_round_trip():
    # Model Garden's test_serialize_deserialize arguments, on a smaller (basic-block) depth.
    kwargs = dict(
        model_id=18,
        output_stride=8,
        stem_type="v0",
        se_ratio=0.25,
        init_stochastic_depth_rate=0.2,
        resnetd_shortcut=False,
        replace_stem_max_pool=False,
        use_sync_bn=False,
        activation="relu",
        norm_momentum=0.99,
        norm_epsilon=0.001,
        kernel_initializer="VarianceScaling",
        kernel_regularizer=None,
        bias_regularizer=None,
    )
    network = resnet_deeplab.DilatedResNet(multigrid=(1, 2), last_stage_repeats=2, **kwargs)
    config = network.get_config()
    assert {k: config[k] for k in kwargs} == kwargs
    # Model Garden drops these two from its config; they are needed to rebuild the network.
    assert config["multigrid"] == [1, 2]
    assert config["last_stage_repeats"] == 2

    clone = resnet_deeplab.DilatedResNet.from_config(json.loads(network.to_json())["config"])
    assert clone.get_config() == config
    assert clone.count_params() == network.count_params()
