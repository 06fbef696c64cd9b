"""Tests for vision_core.modeling.layers.nn_blocks_mobile (re-exported by nn_blocks).

Parameter counts and weight shapes were measured on Model Garden 2.20's
`official.vision.modeling.layers.nn_blocks` blocks with the same arguments, on an 8x8 input
(script: /tmp/helpers/parity_effnet_mobilenet/block_counts.py, run in
~/.cache/modelgarden-venv); ours matched them exactly, weight list order included.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_blocks, nn_blocks_mobile

# (constructor kwargs, Model Garden count_params, number of weights, output shape)
IBN_CASES = [
    (dict(in_filters=16, out_filters=16, expand_ratio=6, strides=1), 4768, 15, [1, 8, 8, 16]),
    (
        dict(
            in_filters=16, out_filters=24, expand_ratio=6, strides=2, kernel_size=5, se_ratio=0.25
        ),
        7972,
        19,
        [1, 4, 4, 24],
    ),
    (
        dict(in_filters=32, out_filters=16, expand_ratio=1, strides=1, se_ratio=0.25),
        1544,
        14,
        [1, 8, 8, 16],
    ),
    (
        dict(in_filters=16, out_filters=32, expand_ratio=8, strides=2, use_depthwise=False),
        23168,
        10,
        [1, 4, 4, 32],
    ),
    (
        dict(in_filters=32, out_filters=16, expand_ratio=1, strides=1, use_depthwise=False),
        576,
        5,
        [1, 8, 8, 16],
    ),
    (
        dict(
            in_filters=40,
            out_filters=40,
            expand_ratio=3,
            strides=1,
            kernel_size=5,
            se_ratio=0.25,
            expand_se_in_filters=True,
            divisible_by=8,
            se_gating_activation="hard_sigmoid",
            activation="hard_swish",
        ),
        21552,
        19,
        [1, 8, 8, 40],
    ),
]


def _inputs(channels, size=8):
    return tf.random.stateless_uniform([1, size, size, channels], seed=[0, 1])


def test_blocks_are_reexported_from_nn_blocks():
    assert nn_blocks.InvertedBottleneckBlock is nn_blocks_mobile.InvertedBottleneckBlock
    assert nn_blocks.DepthwiseSeparableConvBlock is nn_blocks_mobile.DepthwiseSeparableConvBlock


@pytest.mark.parametrize("kwargs, params, num_weights, shape", IBN_CASES)
def test_inverted_bottleneck_matches_model_garden_counts(kwargs, params, num_weights, shape):
    block = nn_blocks.InvertedBottleneckBlock(**kwargs)
    out = block(_inputs(kwargs["in_filters"]))
    assert out.shape.as_list() == shape
    assert block.count_params() == params
    assert len(block.weights) == num_weights


def test_inverted_bottleneck_residual_only_when_shapes_allow():
    inputs = _inputs(16)
    kwargs = dict(in_filters=16, out_filters=16, expand_ratio=4, strides=1)
    with_residual = nn_blocks.InvertedBottleneckBlock(**kwargs)
    without = nn_blocks.InvertedBottleneckBlock(use_residual=False, **kwargs)
    with_residual(inputs)
    without(inputs)
    without.set_weights(with_residual.get_weights())
    y_res = with_residual(inputs, training=False)
    y_plain = without(inputs, training=False)
    np.testing.assert_allclose(y_res.numpy(), (y_plain + inputs).numpy(), atol=1e-5)


def test_inverted_bottleneck_intermediate_endpoint_and_stochastic_depth():
    block = nn_blocks.InvertedBottleneckBlock(
        in_filters=8,
        out_filters=8,
        expand_ratio=6,
        strides=1,
        stochastic_depth_drop_rate=0.5,
        output_intermediate_endpoints=True,
    )
    inputs = _inputs(8)
    out, endpoints = block(inputs, training=False)
    assert out.shape.as_list() == [1, 8, 8, 8]
    assert endpoints["depthwise"].shape.as_list() == [1, 8, 8, 48]
    # In training each example keeps or drops its whole branch; a dropped one is the input.
    batch = tf.tile(inputs, [16, 1, 1, 1])
    tf.random.set_seed(3)
    trained, _ = block(batch, training=True)
    equals_input = np.isclose(trained.numpy(), batch.numpy()).reshape(16, -1).all(axis=1)
    assert equals_input.any() and not equals_input.all()


def test_inverted_bottleneck_dilation_and_regularized_depthwise():
    block = nn_blocks.InvertedBottleneckBlock(
        in_filters=8,
        out_filters=16,
        expand_ratio=2,
        strides=1,
        dilation_rate=2,
        regularize_depthwise=True,
        kernel_regularizer=tf_keras.regularizers.L2(1e-3),
    )
    block(_inputs(8))
    assert block._conv1.dilation_rate == (2, 2)
    # expand conv, depthwise conv and projection conv each add one L2 loss.
    assert len(block.losses) == 3


def test_depthwise_separable_block():
    block = nn_blocks.DepthwiseSeparableConvBlock(filters=64, strides=2)
    out = block(_inputs(32))
    assert out.shape.as_list() == [1, 4, 4, 64]
    assert block.count_params() == 2720  # Model Garden 2.20, same arguments.
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 6.0  # relu6


@pytest.mark.parametrize(
    "block",
    [
        nn_blocks.InvertedBottleneckBlock(
            in_filters=8,
            out_filters=8,
            expand_ratio=3,
            strides=1,
            se_ratio=0.25,
            kernel_regularizer=tf_keras.regularizers.L2(1e-4),
            depthwise_activation="relu6",
        ),
        nn_blocks.DepthwiseSeparableConvBlock(filters=8, kernel_size=5, dilation_rate=2),
        nn_blocks_mobile.Conv2DBNBlock(filters=8, use_normalization=False, use_bias=True),
    ],
    ids=["inverted_bottleneck", "depthwise_separable", "conv2d_bn"],
)
def test_config_round_trip_through_keras_serialization(block):
    config = json.loads(json.dumps(tf_keras.layers.serialize(block)))
    rebuilt = tf_keras.layers.deserialize(config)
    assert type(rebuilt) is type(block)
    assert rebuilt.get_config() == block.get_config()
    inputs = _inputs(8)
    block(inputs)
    rebuilt(inputs)
    assert rebuilt.count_params() == block.count_params()
