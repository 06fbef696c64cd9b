"""Tests for vision_core.modeling.layers.nn_blocks.

Parameter counts are worked out by hand in each test (count_params() includes the BatchNorm
moving mean/variance, so every BN adds 4 values per channel). The forward pass of the
bottleneck block is checked against an independent re-computation with tf.nn ops.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_blocks, nn_layers


def _randomize_batch_norms(layer, seed=0):
    """Non-trivial BN statistics so that a wrong BN order or axis shows in the outputs."""
    rng = np.random.RandomState(seed)
    for var in layer.weights:
        if "moving_variance" in var.name or "gamma" in var.name:
            var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
        elif "moving_mean" in var.name or "beta" in var.name:
            var.assign(rng.uniform(-0.5, 0.5, var.shape).astype(np.float32))


def _zero_conv_kernels(layer):
    for var in layer.weights:
        if "kernel" in var.name:
            var.assign(tf.zeros_like(var))


def _inputs(shape, seed=(1, 2)):
    return tf.random.stateless_normal(shape, seed=seed)


class TestResidualBlock:
    def test_projection_block_shape_and_params(self):
        block = nn_blocks.ResidualBlock(filters=16, strides=2, use_projection=True)
        y = block(_inputs([2, 8, 8, 8]))
        assert y.shape == (2, 4, 4, 16)
        shortcut = 8 * 16 + 4 * 16
        conv1 = 3 * 3 * 8 * 16 + 4 * 16
        conv2 = 3 * 3 * 16 * 16 + 4 * 16
        assert block.count_params() == shortcut + conv1 + conv2 == 3776

    def test_squeeze_excitation_adds_its_params(self):
        block = nn_blocks.ResidualBlock(filters=16, strides=1, se_ratio=0.25)
        block(_inputs([1, 4, 4, 16]))
        plain = 2 * (3 * 3 * 16 * 16 + 4 * 16)
        se = 16 * 4 + 4 + 4 * 16 + 16
        assert block.count_params() == plain + se

    def test_zero_branch_gives_relu_of_input(self):
        block = nn_blocks.ResidualBlock(filters=4, strides=1)
        x = _inputs([2, 5, 5, 4])
        block(x)
        _zero_conv_kernels(block)
        np.testing.assert_allclose(block(x, training=False), tf.nn.relu(x), atol=1e-6)

    def test_full_drop_gives_relu_of_input(self):
        tf.random.set_seed(0)
        block = nn_blocks.ResidualBlock(filters=4, strides=1, stochastic_depth_drop_rate=0.999999)
        x = _inputs([3, 5, 5, 4])
        block(x)
        assert isinstance(block._stochastic_depth, nn_layers.StochasticDepth)
        np.testing.assert_allclose(block(x, training=True), tf.nn.relu(x), atol=1e-6)

    @pytest.mark.parametrize("dilation_rate", [1, 2])
    def test_explicit_padding_matches_same_padding_at_stride_1(self, dilation_rate):
        x = _inputs([1, 9, 9, 4])
        same = nn_blocks.ResidualBlock(filters=4, strides=1, dilation_rate=dilation_rate)
        explicit = nn_blocks.ResidualBlock(
            filters=4, strides=1, dilation_rate=dilation_rate, use_explicit_padding=True
        )
        same(x)
        explicit(x)
        explicit.set_weights(same.get_weights())
        np.testing.assert_allclose(explicit(x), same(x), atol=1e-5)

    def test_dilation_keeps_resolution(self):
        block = nn_blocks.ResidualBlock(filters=8, strides=1, use_projection=True, dilation_rate=2)
        assert block(_inputs([1, 8, 8, 4])).shape == (1, 8, 8, 8)
        assert block._conv1.dilation_rate == (2, 2)
        assert block._conv2.dilation_rate == (2, 2)

    def test_config_round_trip(self):
        block = nn_blocks.ResidualBlock(
            filters=8,
            strides=2,
            use_projection=True,
            se_ratio=0.25,
            stochastic_depth_drop_rate=0.1,
            kernel_regularizer=tf_keras.regularizers.L2(1e-4),
            activation="swish",
            use_explicit_padding=True,
            norm_momentum=0.9,
            bn_trainable=False,
            name="res",
        )
        config = block.get_config()
        clone = nn_blocks.ResidualBlock.from_config(config)
        assert clone.get_config() == config
        assert config["filters"] == 8 and config["activation"] == "swish"
        x = _inputs([1, 8, 8, 4])
        block(x)
        clone(x)
        clone.set_weights(block.get_weights())
        np.testing.assert_allclose(clone(x, training=False), block(x, training=False))
        # Kernels of shortcut, conv1, conv2 and the two squeeze-excitation convs.
        assert len(clone.losses) == len(block.losses) == 5


class TestBottleneckBlock:
    @staticmethod
    def _params(in_ch, filters, projection):
        out = 4 * filters
        total = in_ch * filters + 4 * filters  # 1x1 reduce + BN
        total += 3 * 3 * filters * filters + 4 * filters  # 3x3 + BN
        total += filters * out + 4 * out  # 1x1 expand + BN
        if projection:
            total += in_ch * out + 4 * out
        return total

    @pytest.mark.parametrize("resnetd_shortcut", [False, True])
    def test_projection_block_shape_and_params(self, resnetd_shortcut):
        block = nn_blocks.BottleneckBlock(
            filters=8, strides=2, use_projection=True, resnetd_shortcut=resnetd_shortcut
        )
        assert block(_inputs([2, 8, 8, 32])).shape == (2, 4, 4, 32)
        assert block.count_params() == self._params(32, 8, True) == 2432

    def test_squeeze_excitation_adds_its_params(self):
        block = nn_blocks.BottleneckBlock(filters=8, strides=1, se_ratio=0.25)
        block(_inputs([1, 4, 4, 32]))
        se = 32 * 8 + 8 + 8 * 32 + 32
        assert block.count_params() == self._params(32, 8, False) + se

    @pytest.mark.parametrize("resnetd_shortcut", [False, True])
    def test_matches_reference_computation(self, resnetd_shortcut):
        tf.random.set_seed(0)
        block = nn_blocks.BottleneckBlock(
            filters=4, strides=2, use_projection=True, resnetd_shortcut=resnetd_shortcut
        )
        x = _inputs([2, 8, 8, 6])
        block(x)
        _randomize_batch_norms(block)

        def bn(layer, t):
            gamma, beta, mean, var = (v.numpy() for v in layer.weights)
            return (t - mean) / np.sqrt(var + layer.epsilon) * gamma + beta

        def conv(layer, t, stride):
            return tf.nn.conv2d(t, layer.kernel, strides=stride, padding="SAME")

        if resnetd_shortcut:
            pooled = tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="SAME")
            shortcut = bn(block._norm0, conv(block._shortcut1, pooled, 1))
        else:
            shortcut = bn(block._norm0, conv(block._shortcut, x, 2))
        h = tf.nn.relu(bn(block._norm1, conv(block._conv1, x, 1)))
        h = tf.nn.relu(bn(block._norm2, conv(block._conv2, h, 2)))
        h = bn(block._norm3, conv(block._conv3, h, 1))
        expected = tf.nn.relu(h + shortcut)
        np.testing.assert_allclose(block(x, training=False), expected, rtol=1e-4, atol=1e-5)

    def test_zero_branch_gives_relu_of_input(self):
        block = nn_blocks.BottleneckBlock(filters=2, strides=1)
        x = _inputs([2, 5, 5, 8])
        block(x)
        _zero_conv_kernels(block)
        np.testing.assert_allclose(block(x, training=False), tf.nn.relu(x), atol=1e-6)

    def test_dilation_keeps_resolution(self):
        block = nn_blocks.BottleneckBlock(
            filters=4, strides=1, dilation_rate=4, use_projection=True
        )
        assert block(_inputs([1, 9, 9, 8])).shape == (1, 9, 9, 16)
        assert block._conv2.dilation_rate == (4, 4)
        assert block._conv1.dilation_rate == (1, 1)

    def test_explicit_padding_matches_same_padding_at_stride_1(self):
        x = _inputs([1, 7, 7, 8])
        same = nn_blocks.BottleneckBlock(filters=2, strides=1, dilation_rate=2)
        explicit = nn_blocks.BottleneckBlock(
            filters=2, strides=1, dilation_rate=2, use_explicit_padding=True
        )
        same(x)
        explicit(x)
        explicit.set_weights(same.get_weights())
        np.testing.assert_allclose(explicit(x), same(x), atol=1e-5)

    def test_bn_trainable_false_freezes_norms(self):
        block = nn_blocks.BottleneckBlock(filters=2, strides=1, bn_trainable=False)
        block(_inputs([1, 4, 4, 8]))
        # Only the three conv kernels remain trainable.
        assert len(block.trainable_weights) == 3

    def test_config_round_trip(self):
        block = nn_blocks.BottleneckBlock(
            filters=4,
            strides=2,
            dilation_rate=2,
            use_projection=True,
            se_ratio=0.25,
            resnetd_shortcut=True,
            stochastic_depth_drop_rate=0.2,
            kernel_initializer=tf_keras.initializers.HeNormal(seed=1),
            activation="relu6",
            use_sync_bn=True,
            norm_epsilon=1e-5,
        )
        config = block.get_config()
        clone = nn_blocks.BottleneckBlock.from_config(config)
        assert clone.get_config() == config
        assert config["dilation_rate"] == 2 and config["resnetd_shortcut"] is True
