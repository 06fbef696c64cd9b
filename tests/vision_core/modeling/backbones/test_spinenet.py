"""Tests for vision_core.modeling.backbones.spinenet.

Golden parameter counts: SpineNet-49S / 49 / 96 at 256x256 are Model Garden 2.20's figures listed
in /work/shared/API.md. SpineNet-143 / 143L / 190 were measured in Model Garden 2.20 (TF 2.20) with

    ~/.cache/modelgarden-venv/bin/python -c "import tf_keras; \
    from official.vision.modeling.backbones import spinenet as s; \
    spec = tf_keras.layers.InputSpec(shape=[None, 256, 256, 3]); \
    [print(k, s.SpineNet(input_specs=spec, **v).count_params()) for k, v in s.SCALING_MAP.items()]"

Conv and BN parameter counts do not depend on the input size, so smaller inputs give the same
figures. `count_params()` includes the BatchNorm moving statistics.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core import hyperparams
from vision_core.configs import backbones as backbone_configs
from vision_core.configs import common
from vision_core.modeling.backbones import spinenet
from vision_core.modeling.layers import nn_blocks

GOLDEN_PARAMS = {
    "49S": 9_146_351,  # API.md
    "49": 21_920_192,  # API.md
    "96": 36_385_728,  # API.md
}
# Measured, see the module docstring. Each takes 10-60 s to build on 2 cores, so they run on
# request only (VISION_CORE_LARGE_TESTS=1); 96 already covers block repeats and 49S a fractional
# filter scale, and tests/tutorials/test_spinenet_tutorial.py checks the 143 figure in CI.
LARGE_GOLDEN_PARAMS = {"143": 60_413_888, "143L": 101_011_093, "190": 126_849_216}
RUN_LARGE = os.environ.get("VISION_CORE_LARGE_TESTS") == "1"

NORM = common.NormActivation(norm_momentum=0.97, norm_epsilon=1e-4)
SIZE = 128  # The smallest size divisible by 2^7, the deepest block level.
SMALL_SPECS = [
    (3, "bottleneck", (0, 1), True),
    (4, "residual", (0, 2), True),
    (5, "bottleneck", (2, 3), True),
]


def _images(size=SIZE, batch=1, seed=0):
    return tf.random.stateless_uniform([batch, size, size, 3], seed=[seed, 1], minval=-1.0)


def _blocks(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, nn_blocks.BottleneckBlock | nn_blocks.ResidualBlock)
    ]


def _small(**kwargs):
    """A three-block SpineNet (levels 3-5) that builds in a fraction of the full model's time."""
    defaults = {
        "input_specs": tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]),
        "block_specs": SMALL_SPECS,
        "min_level": 3,
        "max_level": 5,
        "filter_size_scale": 0.25,
        "endpoints_num_filters": 16,
    }
    return spinenet.SpineNet(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def spinenet49s():
    """SpineNet-49S at 128x128, built through the nested config with stochastic depth and L2."""
    config = backbone_configs.Backbone.from_dict(
        {"type": "spinenet", "spinenet": {"model_id": "49S", "stochastic_depth_drop_rate": 0.2}}
    )
    return spinenet.build_spinenet(
        input_specs=tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3]),
        backbone_config=config,
        norm_activation_config=NORM,
        l2_regularizer=tf_keras.regularizers.L2(1e-5),
    )


def test_tables_match_model_garden():
    assert len(spinenet.SPINENET_BLOCK_SPECS) == 16
    assert spinenet.SPINENET_BLOCK_SPECS[0] == (2, "bottleneck", (0, 1), False)
    assert [s[0] for s in spinenet.SPINENET_BLOCK_SPECS if s[3]] == [4, 3, 5, 7, 6, 2]
    # API.md: endpoints filters / filter scale / resample alpha / block repeats.
    expected = {
        "49S": (128, 0.65, 0.5, 1),
        "49": (256, 1.0, 0.5, 1),
        "96": (256, 1.0, 0.5, 2),
        "143": (256, 1.0, 1.0, 3),
        "143L": (256, 1.3, 1.0, 3),
        "190": (512, 1.3, 1.0, 4),
    }
    got = {
        key: (
            p["endpoints_num_filters"],
            p["filter_size_scale"],
            p["resample_alpha"],
            p["block_repeats"],
        )
        for key, p in spinenet.SCALING_MAP.items()
    }
    assert got == expected


def test_build_block_specs():
    specs = spinenet.build_block_specs()
    assert len(specs) == 16
    assert specs[-1] == spinenet.BlockSpec(2, "bottleneck", (2, 13), True)
    assert spinenet.build_block_specs(SMALL_SPECS)[1].block_fn == "residual"


def test_spinenet49s_golden_count_and_output_shapes(spinenet49s):
    assert spinenet49s.count_params() == GOLDEN_PARAMS["49S"]
    outputs = spinenet49s(_images(), training=False)
    assert sorted(outputs) == ["3", "4", "5", "6", "7"]
    for level, features in outputs.items():
        size = SIZE // 2 ** int(level)
        assert features.shape.as_list() == [1, size, size, 128]
        assert spinenet49s.output_specs[level].as_list() == [None, size, size, 128]
        assert np.all(np.isfinite(features.numpy()))


def test_output_blocks_absorb_unconsumed_features(spinenet49s):
    # Model Garden's wiring: exactly one fusion (output block 12, level 3) takes a third parent.
    adds = [layer for layer in spinenet49s.layers if isinstance(layer, tf_keras.layers.Add)]
    assert [len(layer.input) for layer in adds] == [2] * 11 + [3] + [2] * 3


def test_stochastic_depth_grows_along_the_blocks(spinenet49s):
    rates = [block.get_config()["stochastic_depth_drop_rate"] for block in _blocks(spinenet49s)]
    # Two stem groups without it, then block i of 16 at 0.2 * i / 16 (the level-2 output block
    # feeds no endpoint at levels 3-7, so Keras drops it from the model).
    assert rates.count(None) == 2
    assert sorted(r for r in rates if r is not None) == pytest.approx(
        [0.2 * i / 16 for i in range(1, 16)]
    )


def test_norm_activation_config_reaches_every_norm(spinenet49s):
    norms = [
        layer
        for layer in spinenet49s.submodules
        if isinstance(layer, tf_keras.layers.BatchNormalization)
    ]
    assert len(norms) > 100
    assert {(n.momentum, n.epsilon) for n in norms} == {(0.97, 1e-4)}


def test_l2_regularizer_reaches_every_conv(spinenet49s):
    convs = [
        layer
        for layer in spinenet49s.submodules
        if isinstance(layer, tf_keras.layers.Conv2D)
        and not isinstance(layer, tf_keras.layers.DepthwiseConv2D)
    ]
    assert len(spinenet49s.losses) == len(convs) > 100


@pytest.mark.slow
@pytest.mark.parametrize("model_id", ["49", "96"])
def test_golden_param_counts(model_id):
    network = spinenet.SpineNet(
        input_specs=tf_keras.layers.InputSpec(shape=[None, 256, 256, 3]),
        **spinenet.SCALING_MAP[model_id],
    )
    assert network.count_params() == GOLDEN_PARAMS[model_id]
    # Two stem groups + 15 blocks (the level-2 output block is unused), `block_repeats` each.
    assert len(_blocks(network)) == 17 * spinenet.SCALING_MAP[model_id]["block_repeats"]
    channels = spinenet.SCALING_MAP[model_id]["endpoints_num_filters"]
    assert network.output_specs["3"].as_list() == [None, 32, 32, channels]


@pytest.mark.skipif(not RUN_LARGE, reason="set VISION_CORE_LARGE_TESTS=1 (slow builds)")
@pytest.mark.parametrize("model_id", sorted(LARGE_GOLDEN_PARAMS))
def test_large_golden_param_counts(model_id):
    network = spinenet.SpineNet(**spinenet.SCALING_MAP[model_id])
    assert network.count_params() == LARGE_GOLDEN_PARAMS[model_id]


def test_unknown_input_size_builds_the_fixed_size_network(spinenet49s):
    # The tutorial's flat config. Model Garden plans the wiring from static widths, so with an
    # unknown size it skips the 3-parent fusion and drops a block (8,488,825 parameters for
    # 49S, measured); here the plan is the same as at any valid fixed size.
    config = hyperparams.Config(
        type="spinenet", model_id="49S", min_level=3, max_level=7, stochastic_depth_drop_rate=0.2
    )
    network = spinenet.build_spinenet(
        input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
        backbone_config=config,
        norm_activation_config=NORM,
        l2_regularizer=tf_keras.regularizers.L2(1e-5),
    )
    assert network.count_params() == GOLDEN_PARAMS["49S"]
    assert network.output_specs["4"].as_list() == [None, None, None, 128]
    network.set_weights(spinenet49s.get_weights())
    images = _images(seed=3)
    expected = spinenet49s(images, training=False)
    got = network(images, training=False)
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], atol=1e-5)
    # Any size divisible by 128 runs.
    assert network(_images(size=256), training=False)["7"].shape.as_list() == [1, 2, 2, 128]


def test_custom_block_specs_and_levels():
    network = _small()
    # Measured in Model Garden 2.20: SpineNet(block_specs=build_block_specs(SMALL_SPECS),
    # min_level=3, max_level=5, filter_size_scale=0.25, endpoints_num_filters=16) at 64x64.
    assert network.count_params() == 233_472
    outputs = network(_images(size=64, batch=2), training=False)
    assert {k: v.shape.as_list() for k, v in outputs.items()} == {
        "3": [2, 8, 8, 16],
        "4": [2, 4, 4, 16],
        "5": [2, 2, 2, 16],
    }
    assert {k: v.as_list() for k, v in network.output_specs.items()} == {
        "3": [None, 8, 8, 16],
        "4": [None, 4, 4, 16],
        "5": [None, 2, 2, 16],
    }
    # Level-2 stem groups at 0.25 scale: 16 filters; the residual block at level 4: 64.
    blocks = _blocks(network)
    assert [b.get_config()["filters"] for b in blocks] == [16, 16, 32, 64, 64]


def test_config_round_trip_computes_the_same_function():
    network = _small(
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
        activation="swish",
        init_stochastic_depth_rate=0.1,
        resample_alpha=1.0,
    )
    config = network.get_config()
    assert config["block_specs"][1] == [4, "residual", [0, 2], True]
    assert config["input_specs"]["shape"] == [None, 64, 64, 3]
    # The config is plain JSON, as SavedModel metadata needs.
    restored = spinenet.SpineNet.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config
    assert restored.count_params() == network.count_params()
    assert len(restored.losses) == len(network.losses)
    restored.set_weights(network.get_weights())
    images = _images(size=64, seed=5)
    expected = network(images, training=False)
    got = restored(images, training=False)
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], atol=1e-6)


def test_stochastic_depth_only_while_training():
    network = _small(init_stochastic_depth_rate=0.9)
    images = _images(size=64, batch=4, seed=7)
    first = network(images, training=False)
    again = network(images, training=False)
    for level in first:
        np.testing.assert_array_equal(first[level], again[level])
    # Training draws a new drop mask per call (batch norm alone would repeat itself).
    tf.random.set_seed(0)
    trained = network(images, training=True)
    trained_again = network(images, training=True)
    assert any(not np.allclose(trained[k], trained_again[k]) for k in trained)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_level": 5, "max_level": 4}, "min_level"),
        ({"min_level": 3, "max_level": 8}, "min_level/max_level"),
        ({"block_specs": [(3, "mbconv", (0, 1), True)], "max_level": 3}, "block_fn"),
        ({"block_specs": [(3, "bottleneck", (0, 5), True)], "max_level": 3}, "input_offsets"),
        ({"block_specs": [(3, "bottleneck", (0, 1))], "max_level": 3}, r"block_specs\[0\]"),
        (
            {
                "block_specs": [(3, "bottleneck", (0, 1), True), (3, "residual", (0, 2), True)],
                "max_level": 3,
            },
            "more than one output block",
        ),
        ({"activation": "nope"}, "activation"),
        ({"filter_size_scale": 0.0}, "filter_size_scale"),
        ({"block_repeats": 0}, "block_repeats"),
        ({"input_specs": tf_keras.layers.InputSpec(shape=[None, 96, 96, 3])}, "input_specs"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spinenet.SpineNet(**kwargs)


def test_builder_rejects_unknown_model_id_and_wrong_type():
    specs = tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3])
    norm = common.NormActivation()
    with pytest.raises(ValueError, match="model_id.*49S"):
        spinenet.build_spinenet(specs, hyperparams.Config(type="spinenet", model_id="50"), norm)
    with pytest.raises(ValueError, match="backbone.type"):
        spinenet.build_spinenet(specs, hyperparams.Config(type="resnet", model_id="49"), norm)
