"""ASPP decoder: golden parameter count, outputs, options, config round trip."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.decoders import aspp


def _level4_input(size, channels):
    return tf_keras.Input(shape=[size // 16, size // 16, channels])


def test_golden_parameter_count_level4_rates_6_12_18():
    # /work/shared/API.md, "Measured in Model Garden 2.20 at 256x256": ASPP (level 4, rates
    # 6/12/18, 256 filters) on a 2048-channel level-4 input has 15,538,176 parameters.
    decoder = aspp.ASPP(level=4, dilation_rates=[6, 12, 18], num_filters=256)
    decoder({"4": _level4_input(256, 2048)})
    assert decoder.count_params() == 15_538_176


def test_parameter_count_by_hand_small():
    c, f, rates = 6, 4, [2, 3]
    decoder = aspp.ASPP(level=3, dilation_rates=rates, num_filters=f)
    decoder(tf.zeros([1, 8, 8, c]))
    branches = c * f + len(rates) * 9 * c * f + c * f  # 1x1, dilated 3x3s, pooling 1x1
    projection = (len(rates) + 2) * f * f
    norms = (len(rates) + 3) * 4 * f
    assert decoder.count_params() == branches + projection + norms


def test_depthwise_parameter_count_by_hand():
    c, f, rates = 6, 4, [2, 3]
    decoder = aspp.ASPP(
        level=3, dilation_rates=rates, num_filters=f, use_depthwise_convolution=True
    )
    decoder(tf.zeros([1, 8, 8, c]))
    branches = c * f + len(rates) * (9 * c + c * f) + c * f
    projection = (len(rates) + 2) * f * f
    norms = (len(rates) + 3) * 4 * f
    assert decoder.count_params() == branches + projection + norms


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_dict_output_and_output_specs(version):
    decoder = aspp.ASPP(level=3, dilation_rates=[2], num_filters=8, spp_layer_version=version)
    features = {"2": tf.zeros([2, 16, 16, 4]), "3": tf.zeros([2, 8, 8, 6])}
    outputs = decoder(features)
    assert list(outputs) == ["3"]
    assert outputs["3"].shape.as_list() == [2, 8, 8, 8]
    assert decoder.output_specs["3"].as_list() == [2, 8, 8, 8]
    assert decoder.compute_output_shape({k: v.shape for k, v in features.items()}) == {
        "3": tf.TensorShape([2, 8, 8, 8])
    }


def test_output_tensor_returns_bare_tensor():
    decoder = aspp.ASPP(level=3, dilation_rates=[2], num_filters=8, output_tensor=True)
    out = decoder({"3": tf.zeros([1, 8, 8, 6])})
    assert isinstance(out, tf.Tensor)
    assert out.shape.as_list() == [1, 8, 8, 8]


def test_pool_kernel_size_is_scaled_by_level():
    # A 32x32 image window at level 3 is a 4x4 pool on the 8x8 features: a 2x2 map resized back.
    decoder = aspp.ASPP(level=3, dilation_rates=[], num_filters=4, pool_kernel_size=[32, 32])
    out = decoder({"3": tf.random.stateless_normal([1, 8, 8, 3], seed=[1, 2])})
    assert out["3"].shape.as_list() == [1, 8, 8, 4]
    assert decoder.aspp.aspp_layers[-1][0].pool_size == (4, 4)


def test_output_specs_before_build_raises():
    with pytest.raises(ValueError, match="output_specs"):
        _ = aspp.ASPP(level=4, dilation_rates=[6]).output_specs


def test_missing_level_is_named():
    decoder = aspp.ASPP(level=5, dilation_rates=[2], num_filters=4)
    with pytest.raises(ValueError, match="level 5"):
        decoder({"3": tf.zeros([1, 8, 8, 3])})


def test_unknown_spp_layer_version_raises():
    with pytest.raises(ValueError, match="spp_layer_version 'v3'"):
        aspp.ASPP(level=4, dilation_rates=[6], spp_layer_version="v3")


def test_get_config_round_trip_matches_model_garden_keys():
    kwargs = dict(
        level=3,
        dilation_rates=[6, 12],
        num_filters=256,
        pool_kernel_size=None,
        use_sync_bn=False,
        norm_momentum=0.99,
        norm_epsilon=0.001,
        activation="relu",
        kernel_initializer="VarianceScaling",
        kernel_regularizer=None,
        interpolation="bilinear",
        dropout_rate=0.2,
        use_depthwise_convolution=False,
        spp_layer_version="v1",
        output_tensor=False,
        dtype="float32",
        name="aspp",
        trainable=True,
    )
    decoder = aspp.ASPP(**kwargs)
    config = decoder.get_config()
    for key, value in kwargs.items():
        assert config[key] == value, key
    clone = aspp.ASPP.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config


def test_regularizer_adds_losses():
    decoder = aspp.ASPP(
        level=3,
        dilation_rates=[2],
        num_filters=4,
        kernel_regularizer=tf_keras.regularizers.l2(1e-4),
    )
    decoder(tf.zeros([1, 8, 8, 3]))
    # 1x1, one dilated, pooling 1x1 and projection kernels are regularized.
    assert len(decoder.losses) == 4
    assert np.all(np.array([float(v) for v in decoder.losses]) > 0)
