"""SpatialPyramidPooling against an independent NumPy computation."""

import numpy as np
import tensorflow as tf

from vision_core.modeling.layers import spp

EPS = 1e-3


def _fresh_bn(x):
    # A never-trained batch norm in inference mode: mean 0, variance 1, gamma 1, beta 0.
    return x / np.sqrt(1.0 + EPS)


def test_matches_numpy_with_global_pooling_branch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=[2, 5, 7, 3]).astype(np.float32)
    layer = spp.SpatialPyramidPooling(
        output_channels=4, dilation_rates=[], dropout=0.0, batchnorm_epsilon=EPS
    )
    out = layer(tf.constant(x), training=False).numpy()

    w1 = layer.aspp_layers[0][0].kernel.numpy()[0, 0]  # [3, 4]
    w_pool = layer.aspp_layers[1][1].kernel.numpy()[0, 0]  # [3, 4]
    w_proj = layer._projection[0].kernel.numpy()[0, 0]  # [8, 4]
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    branch1 = relu(_fresh_bn(x @ w1))
    pooled = relu(_fresh_bn(x.mean(axis=(1, 2), keepdims=True) @ w_pool))
    branch2 = np.broadcast_to(pooled, branch1.shape)
    expected = relu(_fresh_bn(np.concatenate([branch1, branch2], axis=-1) @ w_proj))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_dilated_branches_and_dropout_only_in_training():
    x = tf.random.stateless_normal([1, 9, 9, 3], seed=[3, 4])
    with_dropout = spp.SpatialPyramidPooling(output_channels=8, dilation_rates=[2, 3], dropout=0.5)
    inference = with_dropout(x, training=False)
    assert inference.shape.as_list() == [1, 9, 9, 8]
    config = dict(with_dropout.get_config(), dropout=0.0, name="no_dropout")
    without = spp.SpatialPyramidPooling.from_config(config)
    without(x)
    without.set_weights(with_dropout.get_weights())
    np.testing.assert_allclose(without(x, training=False), inference, rtol=1e-6)

    tf.random.set_seed(0)
    dropped = with_dropout(x, training=True).numpy()
    kept = without(x, training=True).numpy()
    # Same weights and batch statistics: dropout zeroes about half of the non-zero activations
    # and scales the rest by 2.
    nonzero = kept != 0
    assert 0.3 < np.mean(dropped[nonzero] == 0) < 0.7
    survivors = dropped != 0
    np.testing.assert_allclose(dropped[survivors], 2 * kept[survivors], rtol=1e-5)


def test_get_config_round_trip():
    layer = spp.SpatialPyramidPooling(
        output_channels=4, dilation_rates=[2], pool_kernel_size=[2, 2]
    )
    clone = spp.SpatialPyramidPooling.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
