"""Tests for vision_core.modeling.backbones.resnet.

Golden parameter counts and output shapes come from Model Garden's own
official/vision/modeling/backbones/resnet_test.py (also listed in /work/shared/API.md);
`count_params()` includes the BatchNorm moving mean and variance. Other counts are derived by
hand in the test from the architecture (each BN adds 4 values per channel).
"""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones import resnet
from vision_core.modeling.layers import nn_blocks

GOLDEN_PARAMS = {
    10: 4_915_904,
    18: 11_190_464,
    26: 17_465_024,
    34: 21_306_048,
    50: 23_561_152,
    101: 42_605_504,
    152: 58_295_232,
}
RESNET50 = GOLDEN_PARAMS[50]


def _blocks(model, cls=(nn_blocks.ResidualBlock, nn_blocks.BottleneckBlock)):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def _bottleneck_params(in_ch, filters, projection, se_ratio=None):
    out = 4 * filters
    total = in_ch * filters + 4 * filters + 9 * filters * filters + 4 * filters
    total += filters * out + 4 * out
    if projection:
        total += in_ch * out + 4 * out
    if se_ratio:
        reduced = int(out * se_ratio)
        total += out * reduced + reduced + reduced * out + out
    return total


@pytest.mark.parametrize("model_id", sorted(GOLDEN_PARAMS))
def test_golden_param_count_and_output_shapes(model_id):
    network = resnet.ResNet(model_id=model_id)
    assert network.count_params() == GOLDEN_PARAMS[model_id]

    scale = 4 if model_id >= 50 else 1
    endpoints = network(tf_keras.Input(shape=(128, 128, 3), batch_size=1))
    assert sorted(endpoints) == ["2", "3", "4", "5"]
    for level, channels in zip("2345", (64, 128, 256, 512)):
        size = 128 // 2 ** int(level)
        assert endpoints[level].shape.as_list() == [1, size, size, channels * scale]
        assert network.output_specs[level].as_list() == [None, None, None, channels * scale]


def test_specs_cover_every_model_garden_depth():
    assert sorted(resnet.RESNET_SPECS) == [10, 18, 26, 34, 50, 101, 152, 200, 270, 350, 420]
    for model_id in (10, 18, 26, 34, 50, 101, 152, 200):
        specs = resnet.RESNET_SPECS[model_id]
        layers_per_block = 2 if specs[0][0] == "residual" else 3
        # Depth = stem conv + blocks * convs per block + the classifier layer.
        assert 2 + layers_per_block * sum(s[2] for s in specs) == model_id
    # ResNet-RS depths (Bello et al., 2021) as listed by Model Garden.
    assert [s[2] for s in resnet.RESNET_SPECS[270]] == [4, 29, 53, 4]
    assert [s[2] for s in resnet.RESNET_SPECS[350]] == [4, 36, 72, 4]
    assert [s[2] for s in resnet.RESNET_SPECS[420]] == [4, 44, 87, 4]


def test_output_specs_match_real_outputs():
    network = resnet.ResNet(
        model_id=18, input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])
    )
    images = tf.random.stateless_uniform([2, 64, 64, 3], seed=[0, 1])
    outputs = network(images, training=False)
    assert set(outputs) == set(network.output_specs)
    for level, spec in network.output_specs.items():
        assert spec.as_list() == [None] + outputs[level].shape.as_list()[1:]
        assert outputs[level].shape[0] == 2
        assert np.isfinite(outputs[level].numpy()).all()


def test_paper_form_without_first_projection():
    # torchvision's resnet18 (the paper's form) has 11,689,512 parameters, 513,000 of them in
    # the 1000-way classifier; its 20 BatchNorms hold 4,800 channels whose moving mean and
    # variance add 9,600. Model Garden's extra 1x1 conv + BN is 64*64 + 4*64 = 4,352 more.
    paper = resnet.ResNet(model_id=18, use_first_projection=False)
    assert paper.count_params() == 11_689_512 - 513_000 + 9_600 == 11_186_112
    assert GOLDEN_PARAMS[18] - paper.count_params() == 64 * 64 + 4 * 64
    first = _blocks(paper)[0]
    assert first.get_config()["use_projection"] is False
    # Bottleneck models always project in the first block, as in the paper.
    assert resnet.ResNet(model_id=50, use_first_projection=False).count_params() == RESNET50


def test_first_projection_needs_matching_stem_width():
    with pytest.raises(ValueError, match="use_first_projection=False"):
        resnet.ResNet(
            model_id=10, depth_multiplier=2.0, scale_stem=False, use_first_projection=False
        )


def test_stem_variants_param_counts():
    resnet10 = GOLDEN_PARAMS[10]
    # v1 stem = 3x3 convs 3->32, 32->32, 32->64 (+BN) instead of the 7x7 3->64 conv (+BN).
    v0_stem = 7 * 7 * 3 * 64 + 4 * 64
    v1_stem = 27 * 32 + 4 * 32 + 9 * 32 * 32 + 4 * 32 + 9 * 32 * 64 + 4 * 64
    assert resnet.ResNet(model_id=10, stem_type="v1").count_params() == (
        resnet10 - v0_stem + v1_stem
    )
    # The max pool becomes a stride-2 3x3 conv 64->64 + BN.
    assert resnet.ResNet(model_id=10, replace_stem_max_pool=True).count_params() == (
        resnet10 + 9 * 64 * 64 + 4 * 64
    )
    # ResNet-D shortcuts move the stride into an average pool: same variables.
    resnetd = resnet.ResNet(model_id=50, resnetd_shortcut=True)
    assert resnetd.count_params() == RESNET50
    assert sum(hasattr(b, "_shortcut0") for b in _blocks(resnetd)) == 4


def test_squeeze_excitation_param_count():
    specs = resnet.RESNET_SPECS[50]
    extra = sum(
        repeats * (_bottleneck_params(1, f, False, 0.25) - _bottleneck_params(1, f, False))
        for _, f, repeats in specs
    )
    assert resnet.ResNet(model_id=50, se_ratio=0.25).count_params() == RESNET50 + extra


@pytest.mark.parametrize(
    "model_id, scale, stem_type, se_ratio, sd_rate, depth_multiplier, resnetd, replace_pool",
    [
        # Model Garden's test_resnet_rs cases.
        (34, 1, "v0", None, 0.0, 1.0, False, False),
        (34, 1, "v1", 0.25, 0.2, 1.25, True, True),
        (50, 4, "v0", None, 0.0, 1.5, False, False),
        (50, 4, "v1", 0.25, 0.2, 2.0, True, True),
    ],
)
def test_resnet_rs_variants(
    model_id, scale, stem_type, se_ratio, sd_rate, depth_multiplier, resnetd, replace_pool
):
    network = resnet.ResNet(
        model_id=model_id,
        depth_multiplier=depth_multiplier,
        stem_type=stem_type,
        resnetd_shortcut=resnetd,
        replace_stem_max_pool=replace_pool,
        se_ratio=se_ratio,
        init_stochastic_depth_rate=sd_rate,
    )
    endpoints = network(tf_keras.Input(shape=(128, 128, 3), batch_size=1))
    assert endpoints["5"].shape.as_list() == [1, 4, 4, int(512 * depth_multiplier) * scale]
    assert endpoints["2"].shape.as_list() == [1, 32, 32, int(64 * depth_multiplier) * scale]


def test_small_variant_runs_forward():
    network = resnet.ResNet(
        model_id=10,
        stem_type="v1",
        se_ratio=0.25,
        init_stochastic_depth_rate=0.2,
        depth_multiplier=0.5,
        resnetd_shortcut=True,
        replace_stem_max_pool=True,
        activation="swish",
    )
    images = tf.random.stateless_uniform([1, 64, 64, 3], seed=[2, 3])
    out = network(images, training=True)
    assert out["5"].shape == (1, 2, 2, 256)
    assert np.isfinite(out["5"].numpy()).all()


def test_stochastic_depth_grows_with_level():
    network = resnet.ResNet(model_id=18, init_stochastic_depth_rate=0.2)
    rates = [block.get_config()["stochastic_depth_drop_rate"] for block in _blocks(network)]
    # Two blocks per group; group at level l gets 0.2 * l / 5.
    np.testing.assert_allclose(rates, [0.08, 0.08, 0.12, 0.12, 0.16, 0.16, 0.2, 0.2])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_input_channels(channels):
    network = resnet.ResNet(
        model_id=10, input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, channels])
    )
    out = network(tf_keras.Input(shape=(64, 64, channels), batch_size=1))
    assert out["5"].shape.as_list() == [1, 2, 2, 512]
    stem_kernel = network.layers[1].kernel
    assert stem_kernel.shape.as_list() == [7, 7, channels, 64]


@pytest.mark.parametrize("output_stride, levels", [(16, ["2", "3", "4"]), (8, ["2", "3"])])
def test_output_stride_dilates_later_groups(output_stride, levels):
    # The segmentation tutorial's call.
    network = resnet.ResNet(
        model_id=50,
        output_stride=output_stride,
        include_top=False,
        norm_momentum=0.99,
        norm_epsilon=0.001,
    )
    endpoints = network(tf_keras.Input(shape=(128, 128, 3), batch_size=1))
    assert sorted(endpoints) == levels
    top = str(int(math.log2(output_stride)))
    size = 128 // output_stride
    assert endpoints[top].shape.as_list() == [1, size, size, 2048]
    assert network.output_specs[top].as_list() == [None, None, None, 2048]
    # Dilation changes no variable.
    assert network.count_params() == RESNET50
    dilations = [b.get_config()["dilation_rate"] for b in _blocks(network)]
    strides = [b.get_config()["strides"] for b in _blocks(network)]
    if output_stride == 16:
        assert dilations == [1] * 13 + [2] * 3
        assert strides.count(2) == 2
    else:
        assert dilations == [1] * 7 + [2] * 6 + [4] * 3
        assert strides.count(2) == 1


def test_output_stride_32_is_the_plain_network():
    network = resnet.ResNet(model_id=10, output_stride=32)
    assert sorted(network.output_specs) == ["2", "3", "4", "5"]
    assert all(b.get_config()["dilation_rate"] == 1 for b in _blocks(network))


def test_dilated_basic_blocks():
    network = resnet.ResNet(
        model_id=18,
        output_stride=8,
        input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]),
    )
    out = network(tf.zeros([1, 64, 64, 3]))
    assert out["3"].shape == (1, 8, 8, 512)
    assert network.count_params() == GOLDEN_PARAMS[18]


def test_include_top_points_to_classification_model():
    with pytest.raises(ValueError, match="ClassificationModel"):
        resnet.ResNet(model_id=50, include_top=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model_id": 51}, "model_id: unknown ResNet depth 51"),
        ({"model_id": 50, "stem_type": "v2"}, "stem_type"),
        ({"model_id": 50, "output_stride": 12}, "output_stride"),
        ({"model_id": 50, "activation": "rleu"}, "activation"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet.ResNet(**kwargs)


def test_bn_trainable_false_freezes_every_norm():
    network = resnet.ResNet(model_id=10, bn_trainable=False)
    # stem conv + 4 groups x (two 3x3 convs + projection) = 13 trainable kernels.
    assert len(network.trainable_weights) == 13


def test_kernel_regularizer_reaches_every_conv():
    network = resnet.ResNet(model_id=10, kernel_regularizer=tf_keras.regularizers.L2(1e-4))
    assert len(network.losses) == 13


def test_config_round_trip():
    # Model Garden's test_serialize_deserialize arguments (on a smaller depth).
    kwargs = dict(
        model_id=10,
        depth_multiplier=1.0,
        stem_type="v0",
        se_ratio=None,
        resnetd_shortcut=False,
        replace_stem_max_pool=False,
        init_stochastic_depth_rate=0.0,
        scale_stem=True,
        use_sync_bn=False,
        activation="relu",
        norm_momentum=0.99,
        norm_epsilon=0.001,
        kernel_initializer="VarianceScaling",
        kernel_regularizer=None,
        bias_regularizer=None,
        bn_trainable=True,
    )
    network = resnet.ResNet(**kwargs)
    config = network.get_config()
    # Model Garden's keys and values, plus ours.
    assert {k: config[k] for k in kwargs} == kwargs
    assert config["input_specs"] == {"shape": [None, None, None, 3], "dtype": None}
    assert config["use_first_projection"] is True
    assert config["output_stride"] is None

    clone = resnet.ResNet.from_config(config)
    assert clone.get_config() == config
    from_json = resnet.ResNet.from_config(json.loads(network.to_json())["config"])
    assert from_json.get_config() == config


def test_config_round_trip_keeps_input_specs_and_regularizer():
    network = resnet.ResNet(
        model_id=10,
        input_specs=tf_keras.layers.InputSpec(shape=[None, 32, 32, 4]),
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
        output_stride=16,
        use_first_projection=False,
    )
    clone = resnet.ResNet.from_config(json.loads(network.to_json())["config"])
    assert clone.get_config() == network.get_config()
    assert clone.output_specs == network.output_specs
    assert clone.output_specs["4"].as_list() == [None, 2, 2, 512]
    assert len(clone.losses) == len(network.losses) == 12


def test_savedmodel_round_trip(tmp_path):
    network = resnet.ResNet(
        model_id=10,
        input_specs=tf_keras.layers.InputSpec(shape=[None, 32, 32, 3]),
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
    )
    images = tf.random.stateless_uniform([1, 32, 32, 3], seed=[5, 6])
    expected = network(images, training=False)
    network.save(str(tmp_path / "resnet"))
    reloaded = tf_keras.models.load_model(str(tmp_path / "resnet"))
    assert isinstance(reloaded, resnet.ResNet)
    assert reloaded.get_config() == network.get_config()
    actual = reloaded(images, training=False)
    for level in expected:
        np.testing.assert_allclose(actual[level], expected[level], rtol=1e-5, atol=1e-5)
