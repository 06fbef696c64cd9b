"""Tests for vision_core.modeling.layers.nn_layers (values checked by hand or with numpy)."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_layers


@pytest.mark.parametrize(
    "value, divisor, round_down_protect, expected",
    [
        (37, 8, True, 40),  # int(37 + 4) // 8 * 8
        (32, 8, True, 32),
        (10, 8, True, 16),  # 8 would lose more than 10% of 10, so one step up
        (10, 8, False, 8),
        (3, 8, True, 8),  # never below the divisor
        (96 * 0.25, 1, True, 24),
    ],
)
def test_make_divisible(value, divisor, round_down_protect, expected):
    assert nn_layers.make_divisible(value, divisor, round_down_protect=round_down_protect) == (
        expected
    )


def test_make_divisible_min_value():
    assert nn_layers.make_divisible(4, 8, min_value=16) == 16


def test_get_stochastic_depth_rate():
    assert nn_layers.get_stochastic_depth_rate(0.2, 2, 5) == pytest.approx(0.08)
    assert nn_layers.get_stochastic_depth_rate(0.2, 5, 5) == pytest.approx(0.2)
    assert nn_layers.get_stochastic_depth_rate(None, 2, 5) is None
    with pytest.raises(ValueError, match="init_stochastic_depth_rate"):
        nn_layers.get_stochastic_depth_rate(1.5, 2, 5)


_X = np.array([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 7.0], dtype=np.float32)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("relu", np.maximum(_X, 0)),
        ("relu6", np.clip(_X, 0, 6)),
        # Model Garden's hard_swish / hard_sigmoid: x * relu6(x + 3) / 6 and relu6(x + 3) / 6.
        ("hard_swish", _X * np.clip(_X + 3, 0, 6) / 6),
        ("hard_sigmoid", np.clip(_X + 3, 0, 6) / 6),
        ("swish", _X / (1 + np.exp(-_X))),
        ("simple_swish", _X / (1 + np.exp(-_X))),
        ("sigmoid", 1 / (1 + np.exp(-_X))),
        # tanh approximation of GELU.
        (
            "gelu",
            0.5 * _X * (1 + np.tanh(math.sqrt(2 / math.pi) * (_X + 0.044715 * _X**3))),
        ),
        ("linear", _X),
        ("identity", _X),
        ("leaky_relu", np.where(_X > 0, _X, 0.2 * _X)),
    ],
)
@pytest.mark.parametrize("use_keras_layer", [False, True])
def test_get_activation_values(name, expected, use_keras_layer):
    fn = nn_layers.get_activation(name, use_keras_layer=use_keras_layer)
    if use_keras_layer:
        assert isinstance(fn, tf_keras.layers.Layer)
    np.testing.assert_allclose(fn(tf.constant(_X)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_get_activation_is_case_insensitive_and_accepts_callables():
    assert nn_layers.get_activation("ReLU") is nn_layers.get_activation("relu")
    assert nn_layers.get_activation(tf.nn.relu) is tf.nn.relu
    np.testing.assert_allclose(nn_layers.get_activation(None)(tf.constant(_X)).numpy(), _X)


def test_get_activation_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown name 'rleu'.*relu6"):
        nn_layers.get_activation("rleu")


def test_activation_layer_round_trips_through_config():
    layer = nn_layers.get_activation("hard_swish", use_keras_layer=True)
    clone = tf_keras.layers.Activation.from_config(layer.get_config())
    np.testing.assert_allclose(clone(tf.constant(_X)).numpy(), layer(tf.constant(_X)).numpy())


@pytest.mark.parametrize("use_sync_bn", [False, True])
def test_get_norm_layer(use_sync_bn):
    layer = nn_layers.get_norm_layer(use_sync_bn)(momentum=0.9, epsilon=1e-3)
    assert isinstance(layer, tf_keras.layers.BatchNormalization)
    assert layer.synchronized is use_sync_bn
    assert layer.momentum == 0.9


def test_get_bn_axis():
    assert nn_layers.get_bn_axis() == -1


def test_clone_initializer_returns_independent_copy():
    init = tf_keras.initializers.HeNormal(seed=3)
    clone = nn_layers.clone_initializer(init)
    assert clone is not init
    assert clone.get_config() == init.get_config()
    assert nn_layers.clone_initializer("VarianceScaling") == "VarianceScaling"


def test_serializable_config_serializes_objects():
    config = nn_layers.serializable_config(
        {
            "kernel_regularizer": tf_keras.regularizers.L2(0.5),
            "kernel_initializer": tf_keras.initializers.HeNormal(seed=1),
            "grid": (1, 2),
            "name": "x",
        }
    )
    assert config["grid"] == [1, 2]
    assert config["name"] == "x"
    reg = tf_keras.regularizers.get(config["kernel_regularizer"])
    assert reg(tf.ones([2])).numpy() == pytest.approx(1.0)  # 0.5 * (1 + 1)
    assert tf_keras.initializers.get(config["kernel_initializer"]).seed == 1


class TestStochasticDepth:
    def test_identity_at_inference(self):
        layer = nn_layers.StochasticDepth(0.5)
        x = tf.random.stateless_normal([4, 3, 3, 2], seed=[1, 2])
        np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())

    def test_training_drops_whole_examples_and_rescales(self):
        tf.random.set_seed(0)
        layer = nn_layers.StochasticDepth(0.5)
        x = tf.ones([64, 2, 2, 3])
        y = layer(x, training=True).numpy()
        per_example = y.reshape(64, -1)
        # Each example is either dropped (all 0) or kept and scaled by 1 / keep_prob = 2.
        assert set(np.unique(per_example)) <= {0.0, 2.0}
        assert all(len(np.unique(row)) == 1 for row in per_example)
        kept = int((per_example[:, 0] == 2.0).sum())
        assert 0 < kept < 64

    def test_zero_rate_is_identity_while_training(self):
        x = tf.ones([2, 2])
        np.testing.assert_array_equal(nn_layers.StochasticDepth(0.0)(x, training=True), x)

    def test_symbolic_training_flag(self):
        layer = nn_layers.StochasticDepth(0.999999)

        @tf.function
        def run(x, training):
            return layer(x, training=training)

        x = tf.ones([8, 2])
        np.testing.assert_array_equal(run(x, tf.constant(False)).numpy(), x.numpy())
        tf.random.set_seed(1)
        assert float(tf.reduce_sum(run(x, tf.constant(True)))) == 0.0

    def test_config_round_trip(self):
        layer = nn_layers.StochasticDepth(0.3, name="sd")
        clone = nn_layers.StochasticDepth.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        assert layer.get_config()["stochastic_depth_drop_rate"] == 0.3


class TestSqueezeExcitation:
    def test_matches_numpy_and_parameter_count(self):
        tf.random.set_seed(0)
        layer = nn_layers.SqueezeExcitation(in_filters=16, out_filters=16, se_ratio=0.25)
        x = tf.random.stateless_uniform([2, 5, 5, 16], seed=[3, 4])
        y = layer(x).numpy()
        # reduce: 16 -> 4 (kernel + bias), expand: 4 -> 16.
        assert layer.count_params() == 16 * 4 + 4 + 4 * 16 + 16
        w_r, b_r = (v.numpy() for v in layer._se_reduce.weights)
        w_e, b_e = (v.numpy() for v in layer._se_expand.weights)
        squeezed = x.numpy().mean(axis=(1, 2))
        hidden = np.maximum(squeezed @ w_r[0, 0] + b_r, 0)
        gate = 1 / (1 + np.exp(-(hidden @ w_e[0, 0] + b_e)))
        np.testing.assert_allclose(y, x.numpy() * gate[:, None, None, :], rtol=1e-5, atol=1e-6)

    def test_divisible_by_rounds_reduced_width(self):
        layer = nn_layers.SqueezeExcitation(
            in_filters=24, out_filters=96, se_ratio=0.25, divisible_by=8
        )
        layer.build([None, 4, 4, 96])
        assert layer._se_reduce.filters == 8  # 24 * 0.25 = 6 -> 8
        assert layer._se_expand.filters == 96

    def test_config_round_trip(self):
        layer = nn_layers.SqueezeExcitation(
            8,
            8,
            0.5,
            kernel_regularizer=tf_keras.regularizers.L2(1e-4),
            gating_activation="hard_sigmoid",
        )
        clone = nn_layers.SqueezeExcitation.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
