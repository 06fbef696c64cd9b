"""Tests for vision_core.modeling.backbones.spinenet_mobile.

Golden parameter counts: SpineNet-Mobile-49 at 256x256 (2,313,892) is Model Garden 2.20's figure
listed in /work/shared/API.md. 49S and 49XS were measured in Model Garden 2.20 (TF 2.20) with

    ~/.cache/modelgarden-venv/bin/python -c "import tf_keras; \
    from official.vision.modeling.backbones import spinenet_mobile as s; \
    spec = tf_keras.layers.InputSpec(shape=[None, 256, 256, 3]); \
    [print(k, s.SpineNetMobile(input_specs=spec, **v).count_params()) \
     for k, v in s.SCALING_MAP.items()]"

and the small custom networks below the same way with `block_specs=s.build_block_specs(...)`.
Parameter counts do not depend on the input size; they include BatchNorm moving statistics.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core import hyperparams
from vision_core.configs import backbones as backbone_configs
from vision_core.configs import common
from vision_core.modeling.backbones import spinenet_mobile
from vision_core.modeling.layers import nn_blocks

GOLDEN_PARAMS = {
    "49": 2_313_892,  # API.md
    "49S": 1_004_872,  # measured, see the module docstring
    "49XS": 869_400,  # measured, see the module docstring
}
NORM = common.NormActivation(norm_momentum=0.97, norm_epsilon=1e-4)
SIZE = 128  # The smallest size divisible by 2^7, the deepest block level.
# Two upsampling fusions (levels 4 -> 3 and 5 -> 4) and one downsampling one.
SMALL_SPECS = [
    (4, "mbconv", (0, 1), False),
    (3, "mbconv", (1, 2), True),
    (5, "mbconv", (2, 3), True),
    (4, "mbconv", (2, 4), True),
]


def _images(size=SIZE, batch=1, seed=0):
    return tf.random.stateless_uniform([batch, size, size, 3], seed=[seed, 1], minval=-1.0)


def _blocks(model):
    return [layer for layer in model.layers if isinstance(layer, nn_blocks.InvertedBottleneckBlock)]


def _small(**kwargs):
    """SpineNet-Mobile-49XS widths on four blocks (levels 3-5): quick to build."""
    defaults = {
        "input_specs": tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]),
        "block_specs": SMALL_SPECS,
        "min_level": 3,
        "max_level": 5,
        **spinenet_mobile.SCALING_MAP["49XS"],
    }
    return spinenet_mobile.SpineNetMobile(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def mobile49xs():
    """SpineNet-Mobile-49XS at 128x128 from the nested config, with stochastic depth and L2."""
    config = backbone_configs.Backbone.from_dict(
        {
            "type": "spinenet_mobile",
            "spinenet_mobile": {"model_id": "49XS", "stochastic_depth_drop_rate": 0.2},
        }
    )
    return spinenet_mobile.build_spinenet_mobile(
        input_specs=tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3]),
        backbone_config=config,
        norm_activation_config=NORM,
        l2_regularizer=tf_keras.regularizers.L2(1e-5),
    )


def test_tables_match_model_garden():
    assert len(spinenet_mobile.SPINENET_BLOCK_SPECS) == 16
    assert all(spec[1] == "mbconv" for spec in spinenet_mobile.SPINENET_BLOCK_SPECS)
    assert [s[0] for s in spinenet_mobile.SPINENET_BLOCK_SPECS if s[3]] == [4, 3, 5, 7, 6]
    # API.md: endpoints filters / filter scale.
    got = {
        key: (p["endpoints_num_filters"], p["filter_size_scale"], p["block_repeats"])
        for key, p in spinenet_mobile.SCALING_MAP.items()
    }
    assert got == {"49": (48, 1.0, 1), "49S": (40, 0.65, 1), "49XS": (24, 0.6, 1)}
    assert spinenet_mobile.build_block_specs()[2].level == 4


def test_49xs_golden_count_and_output_shapes(mobile49xs):
    assert mobile49xs.count_params() == GOLDEN_PARAMS["49XS"]
    outputs = mobile49xs(_images(), training=False)
    assert sorted(outputs) == ["3", "4", "5", "6", "7"]
    for level, features in outputs.items():
        size = SIZE // 2 ** int(level)
        assert features.shape.as_list() == [1, size, size, 24]
        assert mobile49xs.output_specs[level].as_list() == [None, size, size, 24]
        assert np.all(np.isfinite(features.numpy()))


def test_blocks_are_squeeze_excited_inverted_bottlenecks(mobile49xs):
    blocks = _blocks(mobile49xs)
    assert len(blocks) == 2 + 16
    configs = [block.get_config() for block in blocks]
    assert {c["se_gating_activation"] for c in configs} == {"hard_sigmoid"}
    assert {c["se_ratio"] for c in configs} == {0.2}
    assert {c["expand_ratio"] for c in configs} == {6}
    # Stem groups: 8 -> 16 channels at stride 1, 16 -> 24 at stride 2 (times 0.6, rounded down).
    stem = sorted(
        (c["in_filters"], c["out_filters"], c["strides"])
        for c in configs
        if c["stochastic_depth_drop_rate"] is None
    )
    assert stem == [(4, 9, 1), (9, 14, 2)]
    rates = sorted(
        c["stochastic_depth_drop_rate"]
        for c in configs
        if c["stochastic_depth_drop_rate"] is not None
    )
    assert rates == pytest.approx([0.2 * i / 16 for i in range(1, 17)])


def test_norm_and_regularizer_reach_the_layers(mobile49xs):
    norms = [m for m in mobile49xs.submodules if isinstance(m, tf_keras.layers.BatchNormalization)]
    assert len(norms) > 100
    assert {(n.momentum, n.epsilon) for n in norms} == {(0.97, 1e-4)}
    # Every conv but the depthwise ones (Model Garden regularizes none of those).
    convs = [
        m
        for m in mobile49xs.submodules
        if isinstance(m, tf_keras.layers.Conv2D)
        and not isinstance(m, tf_keras.layers.DepthwiseConv2D)
    ]
    assert len(mobile49xs.losses) == len(convs) > 50


def test_unknown_input_size_builds_the_fixed_size_network(mobile49xs):
    config = hyperparams.Config(
        type="spinenet_mobile",
        model_id="49XS",
        min_level=3,
        max_level=7,
        stochastic_depth_drop_rate=0.2,
    )
    network = spinenet_mobile.build_spinenet_mobile(
        input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
        backbone_config=config,
        norm_activation_config=NORM,
        l2_regularizer=tf_keras.regularizers.L2(1e-5),
    )
    assert network.count_params() == GOLDEN_PARAMS["49XS"]
    network.set_weights(mobile49xs.get_weights())
    images = _images(seed=3)
    expected = mobile49xs(images, training=False)
    got = network(images, training=False)
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model_id", ["49", "49S"])
def test_golden_param_counts(model_id):
    network = spinenet_mobile.SpineNetMobile(
        input_specs=tf_keras.layers.InputSpec(shape=[None, 256, 256, 3]),
        **spinenet_mobile.SCALING_MAP[model_id],
    )
    assert network.count_params() == GOLDEN_PARAMS[model_id]
    channels = spinenet_mobile.SCALING_MAP[model_id]["endpoints_num_filters"]
    assert network.output_specs["7"].as_list() == [None, 2, 2, channels]


def test_small_network_count_and_shapes():
    network = _small()
    assert network.count_params() == 182_560  # measured, see the module docstring
    outputs = network(_images(size=64, batch=2), training=False)
    expected = {"3": [2, 8, 8, 24], "4": [2, 4, 4, 24], "5": [2, 2, 2, 24]}
    assert {k: v.shape.as_list() for k, v in outputs.items()} == expected
    assert {k: [None, *v[1:]] for k, v in expected.items()} == {
        k: v.as_list() for k, v in network.output_specs.items()
    }


def test_blocks_above_max_level_are_built_at_max_level():
    # The level-5 output block is built at level 4; the later level-4 output block is the
    # level-4 endpoint (Model Garden's behaviour; 143,868 parameters measured there).
    network = _small(max_level=4)
    assert network.count_params() == 143_868
    assert {k: v.as_list() for k, v in network.output_specs.items()} == {
        "3": [None, 8, 8, 24],
        "4": [None, 4, 4, 24],
    }


def test_keras_upsampling_computes_the_same_function():
    # The flag changes graph depth and so the `weights` order (in Model Garden too), so the
    # two networks get equal weights from equal seeds instead of `set_weights`.
    tf_keras.utils.set_random_seed(7)
    ops = _small()
    tf_keras.utils.set_random_seed(7)
    keras_layer = _small(use_keras_upsampling_2d=True)
    assert any(isinstance(m, tf_keras.layers.UpSampling2D) for m in keras_layer.layers)
    assert not any(isinstance(m, tf_keras.layers.UpSampling2D) for m in ops.layers)
    images = _images(size=64, seed=4)
    expected, got = ops(images, training=False), keras_layer(images, training=False)
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], atol=1e-6)


def test_config_round_trip_computes_the_same_function():
    network = _small(
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
        activation="swish",
        init_stochastic_depth_rate=0.1,
        se_ratio=0.25,
        expand_ratio=4,
    )
    config = network.get_config()
    assert config["block_specs"][0] == [4, "mbconv", [0, 1], False]
    restored = spinenet_mobile.SpineNetMobile.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config
    assert restored.count_params() == network.count_params()
    assert len(restored.losses) == len(network.losses)
    restored.set_weights(network.get_weights())
    images = _images(size=64, seed=5)
    expected, got = network(images, training=False), restored(images, training=False)
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_level": 4, "max_level": 3}, "min_level"),
        ({"min_level": 2}, "min_level/max_level"),
        ({"max_level": 8}, "max_level"),
        ({"block_specs": [(3, "bottleneck", (0, 1), True)], "max_level": 3}, "block_fn"),
        ({"block_specs": [(3, "mbconv", (2, 1), True)], "max_level": 3}, "input_offsets"),
        ({"activation": "nope"}, "activation"),
        ({"filter_size_scale": -1.0}, "filter_size_scale"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spinenet_mobile.SpineNetMobile(**kwargs)


def test_builder_rejects_unknown_model_id_and_wrong_type():
    specs = tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3])
    with pytest.raises(ValueError, match="model_id.*49XS"):
        spinenet_mobile.build_spinenet_mobile(
            specs, hyperparams.Config(type="spinenet_mobile", model_id="96"), NORM
        )
    with pytest.raises(ValueError, match="backbone.type"):
        spinenet_mobile.build_spinenet_mobile(
            specs, hyperparams.Config(type="spinenet", model_id="49"), NORM
        )
